//! What every conformance test starts from: a fresh store of the backend under test, the site
//! rows the tests write, and the write service as the gRPC API drives it.

use std::{any::Any, ops::Deref};

use wardgate_controller::{
    audit::{self, enforcement},
    compile,
    error::Result,
    generation,
    store::{Change, DeviceRow, GatewayRow, NewAlert, Store},
    write::{self, WriteOutcome},
};
use wardgate_policy::desired::Mode;

/// A store of the backend under test, with what it needs kept alive beside it (a temporary
/// directory, ...). Derefs to the store.
pub struct Fixture {
    // Dropped before `_keep`: a store closes before its directory goes.
    store: Box<dyn Store>,
    _keep: Box<dyn Any>,
}

impl Fixture {
    pub fn new(store: impl Store + 'static, keep: impl Any) -> Fixture {
        Fixture {
            store: Box::new(store),
            _keep: Box::new(keep),
        }
    }
}

impl Deref for Fixture {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// Opens a new empty store with the given per-gateway alert quota.
pub type Open = fn(u32) -> Fixture;

/// The alert quota of a store opened for a test that does not reach it.
pub const QUOTA: u32 = 100_000;

pub const GW_A: &str = "gw-3a";
pub const GW_B: &str = "gw-3b";

/// A profile whose devices talk to the `servers` group on `port`.
pub fn profile_yaml(name: &str, port: u16) -> String {
    format!(
        "name: {name}\nflows:\n  - direction: from-device\n    protocol: tcp\n    \
         peers: [group:servers]\n    ports: {port}\n"
    )
}

pub fn gateway(name: &str) -> GatewayRow {
    GatewayRow {
        name: name.into(),
        interfaces: vec!["eth1".into()],
        location: "ward 3".into(),
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    }
}

/// Device `n`: MAC 02:00:00:00:00:n, address 192.0.2.n, in monitor mode.
pub fn device(name: &str, n: u8, gateway: &str, profile: &str) -> DeviceRow {
    DeviceRow {
        name: name.into(),
        id: 0,
        mac: format!("02:00:00:00:00:{n:02x}").parse().unwrap(),
        addresses: vec![format!("192.0.2.{n}").parse().unwrap()],
        profile: profile.into(),
        mode: Mode::Monitor,
        gateway: gateway.into(),
        location: format!("bed {n}"),
        asset_id: format!("A-{n}"),
    }
}

/// One audited write through the write service with the controller's compiler.
pub fn write(store: &dyn Store, changes: Vec<Change>) -> Result<WriteOutcome> {
    write::write(
        store,
        "user:eve",
        "INC-1 conformance",
        &changes,
        &compile::affected,
    )
}

/// [`write`], which must succeed.
pub fn written(store: &dyn Store, changes: Vec<Change>) -> WriteOutcome {
    write(store, changes).unwrap_or_else(|e| panic!("write refused: {e}"))
}

/// Two gateways, the `servers` group, profile `pump` (port 443) and pumps `pump-1` on gw-3a
/// and `pump-2` on gw-3b, in one write.
pub fn site(store: &dyn Store) -> WriteOutcome {
    written(
        store,
        vec![
            Change::UpsertGateway(gateway(GW_A)),
            Change::UpsertGateway(gateway(GW_B)),
            Change::UpsertGroup {
                name: "servers".into(),
                cidrs: vec!["198.51.100.0/24".into()],
            },
            Change::UpsertProfile {
                name: "pump".into(),
                yaml: profile_yaml("pump", 443),
            },
            Change::UpsertDevice(device("pump-1", 1, GW_A, "pump")),
            Change::UpsertDevice(device("pump-2", 2, GW_B, "pump")),
        ],
    )
}

/// Verifies the audit trail: the chain from genesis, each generation an entry records stored
/// with the content hash the entry says, and (for a store with a head file) the head file.
/// Returns the entries and the generations checked.
pub fn verify_trail(store: &dyn Store) -> (usize, usize) {
    let entries = store.audit().unwrap();
    let n = audit::verify(&entries).unwrap_or_else(|e| panic!("the chain is broken: {e}"));
    let mut generations = 0;
    for e in &entries {
        let changes = enforcement::of_diff(&e.diff).unwrap();
        for (gateway, c) in changes {
            let row = store
                .generation(&gateway, c.generation)
                .unwrap()
                .unwrap_or_else(|| panic!("generation {} of {gateway} is missing", c.generation));
            assert_eq!(
                generation::content_hash(&row.content),
                c.content_sha256,
                "generation {} of {gateway} does not match entry {}",
                c.generation,
                e.seq
            );
            generations += 1;
        }
    }
    if let Some(head) = store.audit_head_path() {
        let report = audit::verify_store(store, &head)
            .unwrap()
            .unwrap_or_else(|e| panic!("the trail does not verify against its head file: {e}"));
        assert_eq!(
            (report.entries, report.generations),
            (n, generations),
            "verify_store checks what the chain holds"
        );
    }
    (n, generations)
}

/// An alert of `device` by `detector`, its body the finding as JSON (the console's filters
/// read the detector from it).
pub fn alert(id: &str, device: &str, severity: u8, detector: &str, count: u64) -> NewAlert {
    NewAlert {
        id: id.into(),
        device: device.into(),
        severity,
        body: format!(r#"{{"detector":"{detector}","id":"{id}","count":{count}}}"#),
        detector: detector.into(),
        peer: "198.51.100.7".into(),
        count,
        last_seen_ns: count * 10,
    }
}
