//! Site pushes are one transaction (one audit entry per object, one generation per gateway,
//! nothing written on any error), writes read only the gateways they change, and a corrupt
//! store row is reported by table and name.

use std::path::{Path, PathBuf};

use tonic::Code;
use wardgate_controller::{
    error::Error,
    store::{Store, StoreError},
};
use wardgate_policy::span::Located;
use wardgate_proto::v1 as pb;
use wardgate_testkit::controller::LabController;

const GW: &str = "gw-ward-3";
const OTHER: &str = "gw-ward-4";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo site and the profile library, as `wardctl push` reads them.
fn demo() -> (wardgate_policy::Site, wardgate_policy::ProfileSet) {
    wardgate_controller::cli::push::read(
        &root().join("device-profiles/sites/demo-ward.yaml"),
        &root().join("device-profiles"),
    )
    .unwrap()
}

/// A pump on `gateway` numbered `i` (its own name, MAC and address).
fn pump(i: u32, gateway: &str) -> wardgate_policy::site::Device {
    wardgate_policy::site::Device {
        id: Some(1000 + i),
        name: Located::new(format!("pump-extra-{i}")),
        mac: Located::new(format!("02:00:00:01:{:02x}:{:02x}", i / 256, i % 256)),
        addresses: vec![Located::new(format!("2001:db8:3::{:x}", i + 1))],
        profile: Located::new("infusion-pump".into()),
        mode: Some(wardgate_policy::Mode::Enforce),
        gateway: Located::new(gateway.into()),
        location: String::new(),
        asset_id: String::new(),
    }
}

async fn lab(dir: &Path) -> LabController {
    LabController::start(
        dir,
        &[GW.to_string(), OTHER.to_string()],
        &[("eve", "engineer")],
    )
    .await
    .unwrap()
}

/// What a refused push must leave: nothing at all.
fn assert_empty(lab: &LabController) {
    assert!(lab.store.audit().unwrap().is_empty(), "no audit entry");
    let s = lab.store.snapshot().unwrap();
    assert!(s.gateways.is_empty(), "no gateway: {:?}", s.gateways);
    assert!(s.devices.is_empty() && s.profiles.is_empty() && s.groups.is_empty());
    assert_eq!(lab.store.latest_generation(GW).unwrap(), 0, "no generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_one_bad_object_writes_nothing_and_the_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    let mut admin = lab.admin("eve").await.unwrap();
    let (site, set) = demo();
    let push = |site: wardgate_policy::Site| {
        let mut admin = admin.clone();
        let set = set.clone();
        async move {
            wardgate_controller::cli::push::load(&mut admin, &site, &set, "CHG-7")
                .await
                .unwrap_err()
                .downcast::<tonic::Status>()
                .unwrap()
        }
    };

    // A MAC that does not parse, on the last device: refused before anything is written.
    let mut bad = site.clone();
    bad.devices.push(wardgate_policy::site::Device {
        mac: Located::new("02:00:zz:00:00:01".into()),
        ..pump(1, GW)
    });
    let s = push(bad).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("pump-extra-1"), "{}", s.message());
    assert_empty(&lab);

    // An address another device of the same push holds: found inside the transaction, after
    // the gateways, groups, profiles and earlier devices were applied; all rolled back.
    let mut dup = site.clone();
    dup.devices.push(pump(1, GW));
    dup.devices.push(wardgate_policy::site::Device {
        addresses: vec![Located::new("2001:db8:3::2".into())],
        ..pump(2, OTHER)
    });
    dup.gateways.push(wardgate_policy::site::Gateway {
        name: Located::new(OTHER.into()),
        interfaces: vec!["wg-dev0".into()],
        location: String::new(),
    });
    let s = push(dup.clone()).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("pump-extra-2") && s.message().contains("pump-extra-1"),
        "{}",
        s.message()
    );
    assert_empty(&lab);

    // A profile no push holds, on a gateway the push creates: refused by the compile.
    let mut ghost = site.clone();
    ghost.devices.push(wardgate_policy::site::Device {
        profile: Located::new("ghost-profile".into()),
        ..pump(3, GW)
    });
    let s = push(ghost).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("ghost-profile"), "{}", s.message());
    assert_empty(&lab);

    // The same site, fixed, goes in.
    dup.devices.pop();
    wardgate_controller::cli::push::load(&mut admin, &dup, &set, "CHG-7")
        .await
        .unwrap();
    assert_eq!(lab.store.latest_generation(GW).unwrap(), 1);
    drop(admin);
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_of_many_devices_on_one_gateway_is_one_generation_and_an_entry_per_object() {
    const N: u32 = 60;
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    // An agent already watching: it must see one bundle holding every device, never a
    // half-loaded site.
    let mut agent = lab.agent(GW).await.unwrap();
    let mut admin = lab.admin("eve").await.unwrap();
    let (mut site, set) = demo();
    site.devices.extend((1..=N).map(|i| pump(i, GW)));
    let loaded = wardgate_controller::cli::push::load(&mut admin, &site, &set, "CHG-8")
        .await
        .unwrap();
    assert_eq!(loaded.generations, 1, "one gateway, one generation");
    assert_eq!(lab.store.latest_generation(GW).unwrap(), 1);
    let objects = site.gateways.len() + site.groups.len() + set.profiles.len() + site.devices.len();
    let audit = lab.store.audit().unwrap();
    assert_eq!(audit.len(), objects, "one audit entry per object");
    assert_eq!(loaded.last_audit, objects as u64);
    assert_eq!(
        audit.iter().filter(|e| e.action == "upsert_device").count(),
        site.devices.len()
    );
    wardgate_controller::audit::verify(&audit).unwrap();
    let mut watch = agent
        .watch_policy(pb::WatchPolicyRequest {
            gateway: GW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let b = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.generation, 1);
    assert_eq!(
        lab.store
            .latest(GW)
            .unwrap()
            .unwrap()
            .state("")
            .unwrap()
            .devices
            .len(),
        site.devices.len()
    );
    drop((admin, watch, agent));
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reads_only_its_gateway_and_a_corrupt_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path()).await;
    let mut admin = lab.admin("eve").await.unwrap();
    let (mut site, set) = demo();
    site.gateways.push(wardgate_policy::site::Gateway {
        name: Located::new(OTHER.into()),
        interfaces: vec!["wg-dev0".into()],
        location: String::new(),
    });
    site.devices.push(pump(1, OTHER));
    wardgate_controller::cli::push::load(&mut admin, &site, &set, "CHG-9")
        .await
        .unwrap();
    let other_gen = lab.store.latest_generation(OTHER).unwrap();

    // A row on the other gateway goes bad (edited outside the controller).
    lab.store
        .execute_raw("UPDATE devices SET addresses = 'not json' WHERE name = 'pump-extra-1'")
        .unwrap();
    match lab.store.device("pump-extra-1") {
        Err(Error::Store(StoreError::Corrupt { table, name, .. })) => {
            assert_eq!((table, name.as_str()), ("devices", "pump-extra-1"));
        }
        other => panic!("a corrupt row must be an error naming it, got {other:?}"),
    }
    let s = admin
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DataLoss, "{s:?}");
    assert!(
        s.message()
            .contains("corrupt row `pump-extra-1` in table `devices`"),
        "{}",
        s.message()
    );

    // A write on this gateway neither reads nor validates the other gateway's devices.
    let w = admin
        .assign_profile(pb::AssignProfileRequest {
            accept_impact: false,
            device: "pump-3a-bed12".into(),
            profile: "patient-monitor".into(),
            reason: "CHG-10".into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.generations.keys().collect::<Vec<_>>(), [GW]);

    // A write that needs the bad row is refused, naming it, and writes nothing.
    let audit = lab.store.audit().unwrap().len();
    let s = admin
        .set_location(pb::SetLocationRequest {
            device: "pump-3a-bed12".into(),
            location: "Ward 4".into(),
            reason: "CHG-11".into(),
        })
        .await
        .map(|_| ());
    assert!(s.is_ok(), "still this gateway only: {s:?}");
    let s = admin
        .upsert_group(pb::UpsertGroupRequest {
            group: Some(pb::Group {
                name: "ntp".into(),
                cidrs: vec!["198.51.100.124/32".into()],
            }),
            reason: "CHG-12".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DataLoss, "{s:?}");
    assert!(s.message().contains("pump-extra-1"), "{}", s.message());
    assert_eq!(lab.store.audit().unwrap().len(), audit + 1);
    assert_eq!(lab.store.latest_generation(OTHER).unwrap(), other_gen);
    drop(admin);
    lab.shutdown().await.unwrap();
}
