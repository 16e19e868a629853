//! The shipped device-profile library: every file parses, validates and compiles.

use std::path::Path;

use wardgate_policy::{Direction, ProfileSet, compile_detailed, diff, lower, parse_site, validate};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn library() -> ProfileSet {
    ProfileSet::load_dir(&root().join("device-profiles"))
        .unwrap_or_else(|d| panic!("library invalid:\n{d}"))
}

fn demo_site() -> (String, wardgate_policy::Site) {
    let file = root().join("device-profiles/sites/demo-ward.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let name = file.display().to_string();
    let site = parse_site(&name, &text).unwrap_or_else(|d| panic!("{d}"));
    (name, site)
}

#[test]
fn every_profile_parses_and_validates() {
    let set = library();
    assert!(
        set.profiles.len() >= 12,
        "only {} profiles",
        set.profiles.len()
    );
    for required in [
        "infusion-pump",
        "infusion-pump-server",
        "patient-monitor",
        "central-station",
        "ct",
        "mr",
        "ultrasound",
        "pacs",
        "ris-worklist",
        "lab-analyzer",
        "hl7-interface-engine",
        "nurse-call",
        "medication-cabinet",
        "dicom-printer",
    ] {
        assert!(set.get(required).is_some(), "missing profile {required}");
    }
    for (name, (_, p)) in &set.profiles {
        assert!(!p.flows.is_empty(), "{name} allows nothing");
        assert!(!p.description.is_empty(), "{name} has no description");
    }
}

#[test]
fn demo_site_validates_against_the_library() {
    let (file, site) = demo_site();
    let d = validate(&file, &site, &library());
    assert!(d.is_empty(), "{d}");
}

#[test]
fn every_profile_compiles_on_a_gateway() {
    // Put one device of every class behind the demo gateway and compile.
    let (file, mut site) = demo_site();
    let set = library();
    let template = site.devices[0].clone();
    site.devices.clear();
    for (i, name) in set.profiles.keys().enumerate() {
        let mut d = template.clone();
        d.id = Some(i as u32 + 1);
        d.name.value = format!("dev-{name}");
        d.mac.value = format!("02:00:00:00:01:{:02x}", i);
        d.addresses = vec![format!("192.0.2.{}", 200 + i).into()];
        d.profile.value = name.clone();
        site.devices.push(d);
    }
    let c = compile_detailed(&file, &site, &set, "gw-ward-3", 7).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.state.generation, 7);
    assert_eq!(c.state.devices.len(), set.profiles.len());
    assert_eq!(c.state.policies.len(), set.profiles.len());
    // Spot checks through the datapath model: a CT may store to PACS, not to the LIS.
    let ct = c.state.devices.iter().find(|d| d.name == "dev-ct").unwrap();
    let pacs = "198.51.100.10".parse().unwrap();
    assert!(lower::lookup(&c.state, ct.policy_id, Direction::FromDevice, pacs, 6, 104).is_some());
    assert!(lower::lookup(&c.state, ct.policy_id, Direction::FromDevice, pacs, 6, 2762).is_some());
    assert!(
        lower::lookup(
            &c.state,
            ct.policy_id,
            Direction::FromDevice,
            "198.51.100.22".parse().unwrap(),
            6,
            2575
        )
        .is_none()
    );
    // Compiling twice gives the same state (deterministic), and a diff with itself is empty.
    let again = compile_detailed(&file, &site, &set, "gw-ward-3", 7).unwrap();
    assert_eq!(again.state, c.state);
    assert!(diff(&c.state, &again.state).is_empty());
}

#[test]
fn mode_change_shows_in_the_diff() {
    let (file, mut site) = demo_site();
    let set = library();
    let a = compile_detailed(&file, &site, &set, "gw-ward-3", 1)
        .unwrap()
        .state;
    site.devices[2].mode = Some(wardgate_policy::Mode::Enforce);
    let b = compile_detailed(&file, &site, &set, "gw-ward-3", 2)
        .unwrap()
        .state;
    let d = diff(&a, &b);
    assert_eq!(d.devices_changed, vec!["us-3a-portable".to_string()]);
    assert!(d.rules_added.is_empty() && d.rules_removed.is_empty());
    assert_eq!((d.from_generation, d.to_generation), (1, 2));
}

#[test]
fn json_schemas_are_current() {
    for (file, text) in [
        (
            "device-profiles/schema/profile.schema.json",
            wardgate_policy::schema::profile_schema(),
        ),
        (
            "device-profiles/schema/site.schema.json",
            wardgate_policy::schema::site_schema(),
        ),
    ] {
        let path = root().join(file);
        if std::env::var_os("WARDGATE_WRITE_SCHEMA").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk, text,
            "{file} is stale: rerun with WARDGATE_WRITE_SCHEMA=1"
        );
    }
}
