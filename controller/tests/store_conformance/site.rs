//! The site as the write service writes it: devices, profiles, groups, gateways, generations,
//! the epoch, stable ids and the audit chain, one writer or two at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use wardgate_controller::{
    compile,
    error::Error,
    store::{Change, DeviceRow, GatewayGenerations, ProfileRow, SiteReader},
    write::{
        WriteOutcome,
        group::{Groups, Job, MAX_GROUP},
    },
};
use wardgate_policy::desired::Mode;

use crate::fixture::{
    GW_A, GW_B, Open, QUOTA, device, gateway, profile_yaml, site, verify_trail, write, written,
};

fn set_mode(device: &str, mode: Mode) -> Change {
    Change::SetMode {
        device: device.into(),
        mode,
    }
}

pub fn devices_are_upserted_with_ids_that_never_change(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let pump1 = store.device("pump-1").unwrap().unwrap();
    assert_eq!(
        pump1,
        wardgate_controller::store::DeviceRow {
            id: 1,
            ..device("pump-1", 1, GW_A, "pump")
        }
    );
    assert_eq!(store.device("pump-2").unwrap().unwrap().id, 2);
    assert_eq!(store.device("pump-9").unwrap(), None);

    // Upserted again with another id asked for and a new location: the id stays.
    let mut again = device("pump-1", 1, GW_A, "pump");
    again.id = 77;
    again.location = "bed 12".into();
    written(&*store, vec![Change::UpsertDevice(again)]);
    let pump1 = store.device("pump-1").unwrap().unwrap();
    assert_eq!((pump1.id, pump1.location.as_str()), (1, "bed 12"));
    // A new device takes the next id.
    written(
        &*store,
        vec![Change::UpsertDevice(device("pump-3", 3, GW_A, "pump"))],
    );
    assert_eq!(store.device("pump-3").unwrap().unwrap().id, 3);

    // Mode, location and profile changes land on the row, and nothing else moves.
    written(
        &*store,
        vec![
            Change::UpsertProfile {
                name: "monitor".into(),
                yaml: profile_yaml("monitor", 8443),
            },
            set_mode("pump-3", Mode::Enforce),
            Change::SetLocation {
                device: "pump-3".into(),
                location: "corridor".into(),
            },
            Change::AssignProfile {
                device: "pump-3".into(),
                profile: "monitor".into(),
            },
        ],
    );
    let pump3 = store.device("pump-3").unwrap().unwrap();
    assert_eq!(
        pump3,
        wardgate_controller::store::DeviceRow {
            id: 3,
            mode: Mode::Enforce,
            location: "corridor".into(),
            profile: "monitor".into(),
            ..device("pump-3", 3, GW_A, "pump")
        }
    );
    let mut names: Vec<(String, u32)> = store
        .snapshot()
        .unwrap()
        .devices
        .into_iter()
        .map(|d| (d.name, d.id))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("pump-1".to_string(), 1),
            ("pump-2".to_string(), 2),
            ("pump-3".to_string(), 3)
        ]
    );
}

pub fn a_refused_write_leaves_nothing_behind(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let trail = store.audit().unwrap().len();
    let generation = store.latest_generation(GW_A).unwrap();
    // Another device's MAC: refused by the store's row check.
    let mut clash = device("pump-4", 4, GW_A, "pump");
    clash.mac = device("pump-1", 1, GW_A, "pump").mac;
    let err = write(
        &*store,
        vec![
            set_mode("pump-1", Mode::Enforce),
            Change::UpsertDevice(clash),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("duplicate MAC")),
        "{err:?}"
    );
    // Another device's address, likewise.
    let mut clash = device("pump-4", 4, GW_A, "pump");
    clash.addresses = device("pump-2", 2, GW_B, "pump").addresses;
    let err = write(&*store, vec![Change::UpsertDevice(clash)]).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("duplicate address")),
        "{err:?}"
    );
    // A device that does not exist, after a change that would have applied.
    let err = write(
        &*store,
        vec![
            set_mode("pump-1", Mode::Enforce),
            set_mode("ghost", Mode::Learn),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    assert_eq!(store.device("pump-1").unwrap().unwrap().mode, Mode::Monitor);
    assert_eq!(store.device("pump-4").unwrap(), None);
    assert_eq!(store.audit().unwrap().len(), trail);
    assert_eq!(store.latest_generation(GW_A).unwrap(), generation);
    // The next write follows on as if the refused ones never were.
    let out = written(&*store, vec![set_mode("pump-1", Mode::Enforce)]);
    assert_eq!(out.audit_seq, trail as u64 + 1);
    assert_eq!(
        out.generations,
        BTreeMap::from([(GW_A.into(), generation + 1)])
    );
    verify_trail(&*store);
}

/// A transaction reads its own changes (the compiler reads the site after them) and leaves
/// nothing when dropped uncommitted; a preview is such a transaction.
pub fn a_transaction_sees_its_changes_and_rolls_back_when_dropped(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let trail = store.audit_chain_head().unwrap();
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.max_device_id().unwrap(), 2);
    assert_eq!(tx.audit_chain_head().unwrap(), trail);
    let mut pump3 = device("pump-3", 3, GW_A, "pump");
    pump3.id = 3;
    tx.apply(&Change::UpsertDevice(pump3.clone())).unwrap();
    tx.apply(&Change::UpsertGroup {
        name: "dns".into(),
        cidrs: vec!["192.0.2.53".into()],
    })
    .unwrap();
    assert_eq!(tx.device("pump-3").unwrap(), Some(pump3.clone()));
    assert_eq!(tx.max_device_id().unwrap(), 3);
    assert_eq!(
        tx.devices_of(&BTreeSet::from([GW_A.to_string()]), &BTreeSet::new())
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["pump-1".to_string(), "pump-3".to_string()])
    );
    assert!(tx.base().unwrap().groups.contains_key("dns"));
    assert_eq!(tx.gateway_names().unwrap(), [GW_A, GW_B]);
    drop(tx);
    assert_eq!(store.device("pump-3").unwrap(), None);
    assert!(!store.groups().unwrap().contains_key("dns"));
    assert_eq!(store.audit_chain_head().unwrap(), trail);

    // A preview compiles what the write would store, and stores nothing.
    let preview = wardgate_controller::write::preview(
        &*store,
        &[set_mode("pump-1", Mode::Enforce)],
        &wardgate_controller::compile::affected,
    )
    .unwrap();
    assert_eq!(preview.gateways.keys().collect::<Vec<_>>(), [GW_A]);
    let (before, after) = &preview.gateways[GW_A];
    let before = before.as_ref().expect("gw-3a has a generation");
    assert_eq!((before.generation, after.generation), (1, 1));
    assert_ne!(before, after);
    assert_eq!(store.device("pump-1").unwrap().unwrap().mode, Mode::Monitor);
    assert_eq!(store.latest_generation(GW_A).unwrap(), 1);
    assert_eq!(store.audit_chain_head().unwrap(), trail);
}

pub fn profiles_are_versioned(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    assert_eq!(
        store.profile("pump").unwrap(),
        Some(ProfileRow {
            name: "pump".into(),
            version: 1,
            yaml: profile_yaml("pump", 443)
        })
    );
    written(
        &*store,
        vec![Change::UpsertProfile {
            name: "pump".into(),
            yaml: profile_yaml("pump", 8443),
        }],
    );
    let v2 = ProfileRow {
        name: "pump".into(),
        version: 2,
        yaml: profile_yaml("pump", 8443),
    };
    assert_eq!(store.profile("pump").unwrap(), Some(v2.clone()));
    assert_eq!(store.profile("nope").unwrap(), None);
    assert_eq!(
        store.snapshot().unwrap().profiles,
        [v2],
        "listings read the latest version only"
    );
    // A profile keeps its policy id across versions; a new profile takes the next one.
    written(
        &*store,
        vec![Change::UpsertProfile {
            name: "monitor".into(),
            yaml: profile_yaml("monitor", 443),
        }],
    );
    let snap = store.snapshot().unwrap();
    assert_eq!(
        snap.policy_ids,
        BTreeMap::from([("monitor".to_string(), 2), ("pump".to_string(), 1)])
    );
    let ids = snap.policy_ids.clone();
    written(
        &*store,
        vec![Change::UpsertProfile {
            name: "pump".into(),
            yaml: profile_yaml("pump", 443),
        }],
    );
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.policy_ids, ids, "policy ids are stable");
    assert_eq!(store.profile("pump").unwrap().unwrap().version, 3);
    // Rule ids: one per (profile, flow), kept as versions come and go.
    assert_eq!(
        snap.rule_ids,
        BTreeMap::from([
            (("monitor".to_string(), "#1".to_string()), 2),
            (("pump".to_string(), "#1".to_string()), 1)
        ])
    );
}

pub fn groups_and_gateways_round_trip(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    assert_eq!(
        store.groups().unwrap(),
        BTreeMap::from([("servers".to_string(), vec!["198.51.100.0/24".to_string()])])
    );
    written(
        &*store,
        vec![
            Change::UpsertGroup {
                name: "servers".into(),
                cidrs: vec!["198.51.100.0/25".into(), "203.0.113.9".into()],
            },
            Change::UpsertGroup {
                name: "dns".into(),
                cidrs: vec!["192.0.2.53".into()],
            },
        ],
    );
    assert_eq!(
        store.groups().unwrap(),
        BTreeMap::from([
            ("dns".to_string(), vec!["192.0.2.53".to_string()]),
            (
                "servers".to_string(),
                vec!["198.51.100.0/25".to_string(), "203.0.113.9".to_string()]
            ),
        ])
    );
    assert_eq!(store.snapshot().unwrap().groups, store.groups().unwrap());

    assert_eq!(store.gateway(GW_A).unwrap(), Some(gateway(GW_A)));
    assert_eq!(store.gateway("gw-9").unwrap(), None);
    let epoch = store.epoch().unwrap();
    store.report_status(GW_A, 1, &epoch, "", None).unwrap();
    // Upserted again: interfaces and location change; what the agent reported stays.
    let mut moved = gateway(GW_A);
    moved.interfaces = vec!["eth1".into(), "eth2".into()];
    moved.location = "ward 4".into();
    written(&*store, vec![Change::UpsertGateway(moved.clone())]);
    assert_eq!(
        store.gateway(GW_A).unwrap(),
        Some(wardgate_controller::store::GatewayRow {
            applied_generation: 1,
            applied_epoch: epoch,
            ..moved
        })
    );
    let mut names: Vec<String> = store
        .snapshot()
        .unwrap()
        .gateways
        .into_iter()
        .map(|g| g.name)
        .collect();
    names.sort();
    assert_eq!(names, [GW_A, GW_B]);
}

pub fn generations_are_numbered_per_gateway_without_gaps(open: Open) {
    let store = open(QUOTA);
    assert_eq!(store.latest(GW_A).unwrap(), None);
    assert_eq!(store.latest_generation(GW_A).unwrap(), 0);
    let out = site(&*store);
    assert_eq!(
        out.generations,
        BTreeMap::from([(GW_A.into(), 1), (GW_B.into(), 1)])
    );
    // A profile both gateways use: both move on.
    let out = written(
        &*store,
        vec![Change::UpsertProfile {
            name: "pump".into(),
            yaml: profile_yaml("pump", 8443),
        }],
    );
    assert_eq!(
        out.generations,
        BTreeMap::from([(GW_A.into(), 2), (GW_B.into(), 2)])
    );
    // A device on one gateway: that one only.
    let out = written(&*store, vec![set_mode("pump-1", Mode::Enforce)]);
    assert_eq!(out.generations, BTreeMap::from([(GW_A.into(), 3)]));
    // A change that is no policy (a suppression): no generation at all.
    let out = written(
        &*store,
        vec![Change::SuppressAlerts {
            device: "pump-1".into(),
            detector: "scan_vertical".into(),
            peer: String::new(),
            made_by: "user:eve".into(),
            made_ms: 1,
            reason: "INC-2".into(),
        }],
    );
    assert!(out.generations.is_empty());
    // The same mode again compiles to the same state: no new generation either.
    let out = written(&*store, vec![set_mode("pump-1", Mode::Enforce)]);
    assert!(out.generations.is_empty(), "{:?}", out.generations);

    let numbers = |gw: &str, after: u32| -> Vec<u32> {
        store
            .generations_after(gw, after)
            .unwrap()
            .into_iter()
            .map(|g| g.generation)
            .collect()
    };
    assert_eq!(numbers(GW_A, 0), [1, 2, 3]);
    assert_eq!(numbers(GW_A, 1), [2, 3]);
    assert_eq!(numbers(GW_A, 3), Vec::<u32>::new());
    assert_eq!(numbers(GW_B, 0), [1, 2]);
    assert_eq!(numbers("gw-9", 0), Vec::<u32>::new());
    assert_eq!(store.latest_generation(GW_A).unwrap(), 3);
    assert_eq!(store.latest_generation(GW_B).unwrap(), 2);
    let latest = store.latest(GW_A).unwrap().unwrap();
    assert_eq!((latest.gateway.as_str(), latest.generation), (GW_A, 3));
    assert_eq!(latest.reason, "INC-1 conformance");
    let second = store.generation(GW_A, 2).unwrap().unwrap();
    assert_eq!(second.generation, 2);
    assert_ne!(second.content, latest.content);
    assert_eq!(store.generation(GW_A, 4).unwrap(), None);
    // What the write returned is what was stored, and it decodes to that generation.
    let state = latest.state(&store.epoch().unwrap()).unwrap();
    assert_eq!(state.generation, 3);
    assert_eq!(state.content_hash, latest.content_hash());
    let mut gens = store.gateway_generations().unwrap();
    gens.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    assert_eq!(
        gens,
        [
            GatewayGenerations {
                gateway: GW_A.into(),
                latest: 3,
                applied: 0
            },
            GatewayGenerations {
                gateway: GW_B.into(),
                latest: 2,
                applied: 0
            },
        ]
    );
    assert_eq!(verify_trail(&*store).1, 5, "five generations in the trail");
}

pub fn the_epoch_is_made_once_and_never_changes(open: Open) {
    let store = open(QUOTA);
    let epoch = store.epoch().unwrap();
    assert!(!epoch.is_empty());
    let out = site(&*store);
    assert_eq!(store.epoch().unwrap(), epoch);
    assert_eq!(out.states[GW_A].epoch, epoch, "generations carry it");
    let tx = store.begin().unwrap();
    assert_eq!(tx.epoch().unwrap(), epoch);
    drop(tx);
    // Another store has another epoch.
    let other = open(QUOTA);
    assert_ne!(other.epoch().unwrap(), epoch);
}

pub fn the_audit_chain_verifies_after_many_writes(open: Open) {
    let store = open(QUOTA);
    assert_eq!(
        store.audit_chain_head().unwrap(),
        (0, wardgate_controller::audit::GENESIS.to_string())
    );
    let out = site(&*store);
    assert_eq!(out.audit_seq, 6, "one entry per change");
    let modes = [Mode::Enforce, Mode::Monitor];
    let mut last = 0;
    for i in 0..40 {
        let out = written(&*store, vec![set_mode("pump-1", modes[i % 2])]);
        assert_eq!(out.generations[GW_A], i as u32 + 2);
        last = out.audit_seq;
    }
    assert_eq!(last, 46);
    assert_eq!(verify_trail(&*store), (46, 42));
    let trail = store.audit().unwrap();
    let tail = trail.last().unwrap();
    assert_eq!(store.audit_chain_head().unwrap(), (46, tail.hash.clone()));
    assert_eq!(
        (
            tail.actor.as_str(),
            tail.target.as_str(),
            tail.reason.as_str()
        ),
        ("user:eve", "pump-1", "INC-1 conformance")
    );
    // Entries come back in sequence order, each following the one before.
    assert!(
        trail
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
}

/// Two threads writing through the write service at once, both changing gw-3a: the writes
/// are serialized, so the chain does not fork and no generation number is given twice.
pub fn two_writers_at_once_neither_fork_the_chain_nor_share_a_generation(open: Open) {
    const WRITES: usize = 25;
    let store = open(QUOTA);
    site(&*store);
    written(
        &*store,
        vec![Change::UpsertDevice(device("pump-3", 3, GW_A, "pump"))],
    );
    let start_gen = store.latest_generation(GW_A).unwrap();
    let start_seq = store.audit_chain_head().unwrap().0;
    let store_ref: &dyn wardgate_controller::store::Store = &*store;
    let outcomes: Vec<(u64, u32)> = std::thread::scope(|s| {
        let writers: Vec<_> = ["pump-1", "pump-3"]
            .into_iter()
            .map(|name| {
                s.spawn(move || {
                    let modes = [Mode::Enforce, Mode::Monitor];
                    (0..WRITES)
                        .map(|i| {
                            // Each write flips this thread's device: gw-3a's state changes.
                            let out = written(store_ref, vec![set_mode(name, modes[i % 2])]);
                            (out.audit_seq, out.generations[GW_A])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let seqs: BTreeSet<u64> = outcomes.iter().map(|o| o.0).collect();
    let gens: BTreeSet<u32> = outcomes.iter().map(|o| o.1).collect();
    let n = 2 * WRITES;
    assert_eq!(
        seqs,
        (start_seq + 1..=start_seq + n as u64).collect(),
        "each write its own entry"
    );
    assert_eq!(
        gens,
        (start_gen + 1..=start_gen + n as u32).collect(),
        "each write its own generation"
    );
    let stored: Vec<u32> = store
        .generations_after(GW_A, 0)
        .unwrap()
        .into_iter()
        .map(|g| g.generation)
        .collect();
    assert_eq!(stored, (1..=start_gen + n as u32).collect::<Vec<_>>());
    let (entries, _) = verify_trail(&*store);
    assert_eq!(entries as u64, start_seq + n as u64);
}

/// Writes `first` through `groups`, holding its compile until each of `rest` waits behind it,
/// then lets them go: `rest` are committed as one group (`write::group`). Returns the outcomes,
/// `first`'s then `rest`'s in order.
fn grouped(
    store: &dyn wardgate_controller::store::Store,
    groups: &Groups,
    first: Job,
    rest: Vec<Job>,
) -> Vec<Result<WriteOutcome, Error>> {
    let entered = Barrier::new(2);
    let release = Barrier::new(2);
    let held = AtomicBool::new(false);
    let gate = |site: &dyn SiteReader, before: &[Option<DeviceRow>], changes: &[Change]| {
        if !held.swap(true, Ordering::SeqCst) {
            entered.wait();
            release.wait();
        }
        compile::affected(site, before, changes)
    };
    let n = rest.len();
    std::thread::scope(|s| {
        let mut writers = vec![s.spawn(|| groups.write(store, first, &gate))];
        entered.wait();
        writers.extend(
            rest.into_iter()
                .map(|job| s.spawn(|| groups.write(store, job, &gate))),
        );
        let start = Instant::now();
        while groups.waiting() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} of {n} writes queued",
                groups.waiting()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        release.wait();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

fn job(changes: Vec<Change>) -> Job {
    Job {
        actor: "user:eve".into(),
        reason: "INC-9 grouped".into(),
        changes,
        accepted_impact: None,
    }
}

/// Writes that wait while another commits are committed together, in one transaction: each
/// keeps its own audit entry, generation and outcome on one chain, as one at a time; a write
/// refused in a group takes none of the others down.
pub fn writes_waiting_together_commit_as_one_group_each_with_its_own_outcome(open: Open) {
    let store = open(QUOTA);
    site(&*store);
    let pumps: Vec<String> = (3..9).map(|n| format!("pump-{n}")).collect();
    for (i, name) in pumps.iter().enumerate() {
        let n = u8::try_from(i + 3).unwrap();
        written(
            &*store,
            vec![Change::UpsertDevice(device(name, n, GW_A, "pump"))],
        );
    }
    let groups = Groups::new(MAX_GROUP);
    let mut seq = store.audit_chain_head().unwrap().0;
    let mut generation = store.latest_generation(GW_A).unwrap();
    for (round, mode) in [Mode::Enforce, Mode::Learn].into_iter().enumerate() {
        // Round 1 slips a write to a device that does not exist among the others.
        let mut rest: Vec<Job> = pumps[1..]
            .iter()
            .map(|name| job(vec![set_mode(name, mode)]))
            .collect();
        if round == 1 {
            rest.insert(2, job(vec![set_mode("pump-nobody", mode)]));
        }
        let outcomes = grouped(&*store, &groups, job(vec![set_mode(&pumps[0], mode)]), rest);
        let mut refused = 0;
        let mut seqs = BTreeSet::new();
        let mut gens = BTreeSet::new();
        for out in outcomes {
            match out {
                Ok(out) => {
                    seqs.insert(out.audit_seq);
                    gens.insert(out.generations[GW_A]);
                }
                Err(e) => {
                    assert!(
                        matches!(e, Error::NotFound { .. }),
                        "only the missing device is refused: {e}"
                    );
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, round, "round {round}");
        let n = pumps.len();
        assert_eq!(seqs, (seq + 1..=seq + n as u64).collect(), "own entries");
        assert_eq!(
            gens,
            (generation + 1..=generation + n as u32).collect(),
            "own generations"
        );
        seq += n as u64;
        generation += n as u32;
        for name in &pumps {
            assert_eq!(store.device(name).unwrap().unwrap().mode, mode, "{name}");
        }
        // The group's last generation was compiled after every write before it in the group.
        let last = store.generation(GW_A, generation).unwrap().unwrap();
        let state = wardgate_controller::generation::decode(&last.content).unwrap();
        for name in &pumps {
            let entry = state.devices.iter().find(|d| &d.name == name).unwrap();
            assert_eq!(entry.mode, mode, "{name} in generation {generation}");
        }
        let stats = groups.stats();
        // Round 1's group also holds the refused write.
        let behind = n - 1 + round;
        assert_eq!(
            stats.largest, behind,
            "round {round}: one group behind the first"
        );
        assert_eq!(stats.one_by_one, round as u64, "round {round}");
    }
    assert_eq!(store.audit_chain_head().unwrap().0, seq);
    let (entries, _) = verify_trail(&*store);
    assert_eq!(entries as u64, seq);
}
