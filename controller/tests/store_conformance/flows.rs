//! Learning: flow records folded into per-device, per-day aggregates with a row cap and a
//! retention, each device's baseline lifecycle, the flows the policy matrix reads, and the
//! console's inventory.

use wardgate_analysis::{
    FlowDirection,
    aggregate::day_of,
    baseline::lifecycle::{Action, Lifecycle, State},
};
use wardgate_controller::{
    error::Error,
    store::{Change, FlowLimits, FlowsStored, InventoryQuery, ObservedFlow},
};
use wardgate_policy::desired::Mode;
use wardgate_testkit::flows::tcp_record;

use crate::fixture::{GW_A, GW_B, Open, QUOTA, device, profile_yaml, site, write, written};

const NS: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * NS;
/// Noon, UTC, of a day in 2024.
const NOW: u64 = 19_800 * DAY + DAY / 2;
/// An hour before.
const T: u64 = NOW - 3_600 * NS;

fn ports(store: &dyn wardgate_controller::store::Store, device: &str) -> Vec<(u16, u64)> {
    store
        .flow_aggregates(device, 0, NOW + 10 * DAY)
        .unwrap()
        .into_iter()
        .map(|a| (a.key.port, a.flows))
        .collect()
}

pub fn flows_are_folded_per_device_peer_port_and_day(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let out = store
        .insert_flows(
            GW_A,
            &[
                tcp_record("pump-1", 443, T),
                tcp_record("pump-1", 443, T + 10 * NS),
                tcp_record("pump-1", 8443, T),
                tcp_record("ghost", 443, T),
                tcp_record("pump-1", 443, NOW - 40 * DAY),
            ],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    assert_eq!(
        out,
        FlowsStored {
            stored: 3,
            unknown_device: 1,
            expired: 1,
            over_cap: 0,
            pruned: 0
        }
    );
    let aggs = store.flow_aggregates("pump-1", NOW - DAY, NOW).unwrap();
    assert_eq!(aggs.len(), 2, "{aggs:?}");
    let a = &aggs[0];
    assert_eq!(
        (
            a.key.device.as_str(),
            a.key.direction,
            a.key.peer,
            a.key.proto,
            a.key.port,
            a.key.day
        ),
        (
            "pump-1",
            FlowDirection::Opened,
            "198.51.100.30".parse().unwrap(),
            6,
            443,
            day_of(T)
        )
    );
    assert_eq!(
        (
            a.flows,
            a.packets_out,
            a.packets_in,
            a.bytes_out,
            a.bytes_in
        ),
        (2, 6, 4, 400, 200)
    );
    assert_eq!((a.first_seen_ns, a.last_seen_ns), (T, T + 11 * NS));
    assert_eq!((aggs[1].key.port, aggs[1].flows), (8443, 1));
    // The window is on the flows' times, not only their day.
    assert!(
        store
            .flow_aggregates("pump-1", NOW - 60 * NS, NOW)
            .unwrap()
            .is_empty()
    );
    // Another gateway's device refuses the whole batch.
    let err = store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 22, T), tcp_record("pump-2", 443, T)],
            NOW,
            FlowLimits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err:?}");
    assert_eq!(ports(&*store, "pump-1"), [(443, 2), (8443, 1)]);
    assert!(ports(&*store, "pump-2").is_empty());
    // The baseline starts with the first stored flow, once.
    let (lc, changed_ms) = store.baseline_lifecycle("pump-1").unwrap().unwrap();
    assert_eq!(lc, Lifecycle::start(T));
    assert!(changed_ms > 0);
    store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 443, T - 100 * NS)],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    assert_eq!(
        store.baseline_lifecycle("pump-1").unwrap().unwrap().0,
        Lifecycle::start(T)
    );
    assert_eq!(store.baseline_lifecycle("pump-2").unwrap(), None);
}

pub fn past_the_row_cap_records_are_counted_per_device_and_day(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let limits = FlowLimits {
        retention_days: 30,
        rows_per_device_day: 2,
    };
    let batch: Vec<_> = (1..=5).map(|p| tcp_record("pump-1", p, T)).collect();
    let out = store.insert_flows(GW_A, &batch, NOW, limits).unwrap();
    assert_eq!((out.stored, out.over_cap), (2, 3));
    assert_eq!(ports(&*store, "pump-1"), [(1, 1), (2, 1)]);
    assert_eq!(store.flow_overflow("pump-1").unwrap(), [(day_of(T), 3)]);
    // A row that exists still takes records; a new one does not.
    let out = store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 1, T + NS), tcp_record("pump-1", 6, T)],
            NOW,
            limits,
        )
        .unwrap();
    assert_eq!((out.stored, out.over_cap), (1, 1));
    assert_eq!(ports(&*store, "pump-1"), [(1, 2), (2, 1)]);
    assert_eq!(store.flow_overflow("pump-1").unwrap(), [(day_of(T), 4)]);
    // The next day has its own cap and count.
    let tomorrow = T + DAY;
    let batch: Vec<_> = (7..=9).map(|p| tcp_record("pump-1", p, tomorrow)).collect();
    let out = store.insert_flows(GW_A, &batch, NOW + DAY, limits).unwrap();
    assert_eq!((out.stored, out.over_cap), (2, 1));
    assert_eq!(
        store.flow_overflow("pump-1").unwrap(),
        [(day_of(T), 4), (day_of(tomorrow), 1)]
    );
    assert!(store.flow_overflow("pump-2").unwrap().is_empty());
}

pub fn flows_past_the_retention_are_pruned(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let old = NOW - 5 * DAY;
    let cap1 = FlowLimits {
        retention_days: 30,
        rows_per_device_day: 1,
    };
    store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 1, old), tcp_record("pump-1", 2, old)],
            NOW,
            cap1,
        )
        .unwrap();
    store
        .insert_flows(GW_A, &[tcp_record("pump-1", 3, T)], NOW, cap1)
        .unwrap();
    assert_eq!(store.flow_overflow("pump-1").unwrap(), [(day_of(old), 1)]);
    assert_eq!(store.prune_flows(NOW, 30).unwrap(), 0);
    assert_eq!(store.prune_flows(NOW, 3).unwrap(), 1, "the old day's row");
    assert_eq!(ports(&*store, "pump-1"), [(3, 1)]);
    assert!(
        store.flow_overflow("pump-1").unwrap().is_empty(),
        "its overflow count goes with it"
    );
    // A batch prunes as it stores.
    let later = NOW + 2 * DAY;
    let out = store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 4, later)],
            later,
            FlowLimits {
                retention_days: 1,
                rows_per_device_day: 10,
            },
        )
        .unwrap();
    assert_eq!((out.stored, out.pruned), (1, 1));
    assert_eq!(ports(&*store, "pump-1"), [(4, 1)]);
}

pub fn baselines_freeze_approve_and_relearn(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let set = |action: Action, now_ns: u64| Change::SetBaseline {
        device: "pump-1".into(),
        action,
        now_ns,
    };
    let err = write(&*store, vec![set(Action::Freeze, NOW)]).unwrap_err();
    assert!(
        matches!(err, Error::Precondition(_)),
        "no flows yet: {err:?}"
    );
    store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 443, T)],
            NOW,
            FlowLimits {
                retention_days: 30,
                rows_per_device_day: 0,
            },
        )
        .unwrap();
    assert_eq!(
        store.flow_overflow("pump-1").unwrap(),
        [(day_of(T), 1)],
        "a cap of 0 stores nothing"
    );
    store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 443, T)],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    let lifecycle = |name: &str| store.baseline_lifecycle(name).unwrap().map(|l| l.0);
    written(&*store, vec![set(Action::Freeze, NOW)]);
    let frozen = Lifecycle {
        state: State::Frozen,
        frozen_ns: Some(NOW),
        ..Lifecycle::start(T)
    };
    assert_eq!(lifecycle("pump-1"), Some(frozen));
    let err = write(&*store, vec![set(Action::Freeze, NOW)]).unwrap_err();
    assert!(matches!(err, Error::Precondition(_)), "{err:?}");
    written(&*store, vec![set(Action::Approve, NOW + NS)]);
    assert_eq!(
        lifecycle("pump-1"),
        Some(Lifecycle {
            state: State::Approved,
            ..frozen
        })
    );
    // Relearning clears what was recorded and starts again.
    written(
        &*store,
        vec![set(
            Action::Relearn {
                window_days: Some(3),
            },
            NOW + 2 * NS,
        )],
    );
    assert_eq!(
        lifecycle("pump-1"),
        Some(Lifecycle {
            state: State::Learning,
            start_ns: NOW + 2 * NS,
            window_days: 3,
            frozen_ns: None,
        })
    );
    assert!(ports(&*store, "pump-1").is_empty());
    assert!(store.flow_overflow("pump-1").unwrap().is_empty());
    // A device without a baseline can be sent to relearn: it starts one.
    written(
        &*store,
        vec![Change::SetBaseline {
            device: "pump-2".into(),
            action: Action::Relearn { window_days: None },
            now_ns: NOW,
        }],
    );
    assert_eq!(lifecycle("pump-2"), Some(Lifecycle::start(NOW)));
    assert_eq!(crate::fixture::verify_trail(&*store).0, 6 + 4);
}

pub fn observed_flows_sum_a_devices_days_with_its_profile(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let yesterday = T - DAY;
    store
        .insert_flows(
            GW_A,
            &[
                tcp_record("pump-1", 443, yesterday),
                tcp_record("pump-1", 443, T),
                tcp_record("pump-1", 8443, T),
            ],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    store
        .insert_flows(
            GW_B,
            &[tcp_record("pump-2", 443, yesterday)],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    let observed = |from_day: u32| -> Vec<ObservedFlow> {
        let mut v = store.observed_flows(from_day).unwrap();
        v.sort_by(|a, b| (&a.device, a.port).cmp(&(&b.device, b.port)));
        v
    };
    let flow = |profile: &str, device: &str, port: u16, flows: u64| ObservedFlow {
        profile: profile.into(),
        device: device.into(),
        direction: FlowDirection::Opened,
        peer: "198.51.100.30".parse().unwrap(),
        proto: 6,
        port,
        flows,
    };
    assert_eq!(
        observed(day_of(yesterday)),
        [
            flow("pump", "pump-1", 443, 2),
            flow("pump", "pump-1", 8443, 1),
            flow("pump", "pump-2", 443, 1),
        ]
    );
    assert_eq!(
        observed(day_of(T)),
        [
            flow("pump", "pump-1", 443, 1),
            flow("pump", "pump-1", 8443, 1)
        ]
    );
    // The profile is the device's as it is now.
    written(
        &*store,
        vec![
            Change::UpsertProfile {
                name: "monitor".into(),
                yaml: profile_yaml("monitor", 443),
            },
            Change::AssignProfile {
                device: "pump-2".into(),
                profile: "monitor".into(),
            },
        ],
    );
    assert_eq!(
        observed(day_of(yesterday))[2],
        flow("monitor", "pump-2", 443, 1)
    );
}

pub fn the_inventory_pages_filters_and_searches_in_the_query(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let mut pump3 = device("pump-3", 3, GW_A, "pump");
    pump3.mode = Mode::Enforce;
    let mut monitor5 = device("monitor-5", 5, GW_B, "monitor");
    monitor5.location = "bed 5, Réanimation".into();
    written(
        &*store,
        vec![
            Change::UpsertProfile {
                name: "monitor".into(),
                yaml: profile_yaml("monitor", 8443),
            },
            Change::UpsertDevice(pump3),
            Change::UpsertDevice(device("monitor-4", 4, GW_A, "monitor")),
            Change::UpsertDevice(monitor5),
        ],
    );
    store
        .insert_flows(
            GW_A,
            &[tcp_record("pump-1", 443, T)],
            NOW,
            FlowLimits::default(),
        )
        .unwrap();
    let page = |q: InventoryQuery| -> (Vec<String>, u64) {
        let p = store.inventory(&q).unwrap();
        (p.rows.into_iter().map(|r| r.device.name).collect(), p.total)
    };
    let q = |limit: u32| InventoryQuery {
        limit,
        ..Default::default()
    };
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(page(q(2)), (strs(&["monitor-4", "monitor-5"]), 5));
    assert_eq!(
        page(InventoryQuery { offset: 2, ..q(2) }),
        (strs(&["pump-1", "pump-2"]), 5)
    );
    assert_eq!(
        page(InventoryQuery { offset: 4, ..q(2) }),
        (strs(&["pump-3"]), 5)
    );
    let search = |s: &str| InventoryQuery {
        search: s.into(),
        ..q(10)
    };
    assert_eq!(
        page(search("02:00:00:00:00:03")),
        (strs(&["pump-3"]), 1),
        "MAC"
    );
    assert_eq!(
        page(search("192.0.2.4")),
        (strs(&["monitor-4"]), 1),
        "address"
    );
    assert_eq!(page(search("A-5")), (strs(&["monitor-5"]), 1), "asset id");
    assert_eq!(page(search("bed 2")), (strs(&["pump-2"]), 1), "location");
    assert_eq!(
        page(search(" pump ")),
        (strs(&["pump-1", "pump-2", "pump-3"]), 3)
    );
    // Case-insensitive for ASCII letters (SQLite's LIKE; ILIKE on PostgreSQL).
    assert_eq!(
        page(search("PUMP")),
        (strs(&["pump-1", "pump-2", "pump-3"]), 3),
        "case-insensitive"
    );
    assert_eq!(page(search("Bed 2")), (strs(&["pump-2"]), 1), "location");
    // ... and only for ASCII letters, whatever the database's locale: `é` is not `É`.
    let m5 = || (strs(&["monitor-5"]), 1);
    assert_eq!(page(search("réANIMATION")), m5(), "ASCII letters folded");
    assert_eq!(
        page(search("RÉANIMATION")),
        (vec![], 0),
        "non-ASCII as written"
    );
    assert_eq!(page(search("p_mp")), (vec![], 0), "`_` is no wildcard");
    assert_eq!(page(search("%")), (vec![], 0), "`%` is no wildcard");
    assert_eq!(
        page(InventoryQuery {
            profile: "monitor".into(),
            ..q(10)
        }),
        (strs(&["monitor-4", "monitor-5"]), 2)
    );
    assert_eq!(
        page(InventoryQuery {
            gateway: GW_B.into(),
            ..q(10)
        }),
        (strs(&["monitor-5", "pump-2"]), 2)
    );
    assert_eq!(
        page(InventoryQuery {
            mode: Some(Mode::Enforce),
            ..q(10)
        }),
        (strs(&["pump-3"]), 1)
    );
    assert_eq!(
        page(InventoryQuery {
            baseline: "learning".into(),
            ..q(10)
        }),
        (strs(&["pump-1"]), 1)
    );
    assert_eq!(
        page(InventoryQuery {
            baseline: "none".into(),
            gateway: GW_A.into(),
            ..q(10)
        }),
        (strs(&["monitor-4", "pump-3"]), 2),
        "filters combine"
    );
    let p = store
        .inventory(&InventoryQuery {
            search: "pump-1".into(),
            ..q(10)
        })
        .unwrap();
    assert_eq!(p.profiles, ["monitor", "pump"]);
    assert_eq!(p.gateways, [GW_A, GW_B]);
    let row = &p.rows[0];
    assert_eq!(row.device, store.device("pump-1").unwrap().unwrap());
    assert_eq!(
        (row.baseline.as_deref(), row.last_seen_ns),
        (Some("learning"), Some(T + NS))
    );
    let row = &page_rows(&*store, search("pump-2"))[0];
    assert_eq!((row.baseline.as_deref(), row.last_seen_ns), (None, None));
}

fn page_rows(
    store: &dyn wardgate_controller::store::Store,
    q: InventoryQuery,
) -> Vec<wardgate_controller::store::InventoryRow> {
    store.inventory(&q).unwrap().rows
}
