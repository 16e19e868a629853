//! MUD import against third-party MUD files (fixtures/README.md): every file either imports
//! into a profile that parses and validates again, or is rejected with an error naming what is
//! unsupported. The namib `*-Test.json` files are an answer key for the parsed ACEs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;
use wardgate_policy::{
    Direction, ProfileSet,
    mud::{self, Abstraction, MudFile},
    parse_profile, parse_site, validate, validate_profile,
};

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mud")).to_path_buf()
}

fn mud_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![fixtures()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if !name.starts_with("LICENSE")
                && !name.ends_with("-Test.json")
                && name != "README.md"
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn load(rel: &str) -> MudFile {
    mud::parse_mud(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

/// Imports everything, checks each result, and prints the table for the issue note.
#[test]
fn every_fixture_imports_or_is_rejected_clearly() {
    let mut rows = Vec::new();
    let (mut imported, mut rejected) = (0, 0);
    for path in mud_files() {
        let rel = path.strip_prefix(fixtures()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let outcome = mud::parse_mud(&text).and_then(|m| mud::import(&m, &BTreeMap::new(), None));
        match outcome {
            Ok(imp) => {
                imported += 1;
                // The written YAML is a valid profile again, and compiles against a site that
                // defines the groups the import asked for.
                let yaml = mud::to_yaml(&imp);
                let p = parse_profile(&rel, &yaml)
                    .unwrap_or_else(|d| panic!("{rel}: re-parse failed: {d}\n{yaml}"));
                let d = validate_profile(&rel, &p);
                assert!(d.is_empty(), "{rel}: {d}\n{yaml}");
                let mut site_text = String::from("site: t\ngroups:\n  unused: [203.0.113.0/24]\n");
                for g in &imp.groups {
                    site_text.push_str(&format!("  {g}: [203.0.113.0/24]\n"));
                }
                let site = parse_site("t.yaml", &site_text).unwrap();
                let mut set = ProfileSet::default();
                let mut dd = wardgate_policy::Diagnostics::default();
                set.insert(&rel, p, &mut dd);
                let d = validate("t.yaml", &site, &set);
                assert!(d.is_empty(), "{rel}: {d}");
                let why = if imp.notes.is_empty() {
                    String::new()
                } else {
                    format!("{} notes, e.g. {}", imp.notes.len(), imp.notes[0])
                };
                rows.push(format!(
                    "| {rel} | imported: {} flows | {why} |",
                    imp.profile.flows.len()
                ));
            }
            Err(e) => {
                rejected += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.contains("panicked"), "{rel}: {msg}");
                rows.push(format!("| {rel} | rejected | {} |", msg.replace('|', "/")));
            }
        }
    }
    println!("| file | result | why |\n|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!("{imported} imported, {rejected} rejected");
    assert!(imported >= 40, "only {imported} of {} imported", rows.len());
}

#[test]
fn rfc_abstractions_and_directions_map_to_groups_and_rules() {
    let m =
        load("nist-mud/test/unittest/mud-controllerclass-test/mudfile-controllerclass-test.json");
    assert!(!m.older_syntax);
    let binds = BTreeMap::from([("controller".to_string(), "his".to_string())]);
    let imp = mud::import(&m, &binds, Some("super1")).unwrap();
    // The to-device ACE is the reply of the device-initiated flow: conntrack covers it.
    assert_eq!(imp.profile.flows.len(), 1, "{:?}", imp.profile.flows);
    let f = &imp.profile.flows[0];
    assert_eq!(f.direction, Direction::FromDevice);
    assert_eq!(f.peers[0].value, "group:his");
    assert_eq!(
        f.ports.as_ref().unwrap().value,
        wardgate_policy::profile::Ports::One(80)
    );
    assert!(imp.notes.iter().any(|n| n.contains("connection tracking")));

    for (file, abstraction) in [
        (
            "nist-mud/test/unittest/mud-mycontrollerclass-test/mudfile-mycontrollerclass-test.json",
            "my-controller",
        ),
        (
            "nist-mud/test/unittest/mud-local-networks-test/mudfile-local-networks-test.json",
            "local-networks",
        ),
        (
            "nist-mud/test/unittest/mud-same-manufacturer-test/mudfile-same-manufacturer-test.json",
            "same-manufacturer",
        ),
        (
            "nist-mud/test/unittest/mud-mfg-test/mudfile-mfg-test.json",
            "manufacturer",
        ),
        (
            "nist-mud/test/unittest/mud-model-test/mudfile-model-test.json",
            "model",
        ),
    ] {
        let m = load(file);
        assert!(
            m.aces
                .iter()
                .any(|a| a.abstractions.iter().any(|x| x.key() == abstraction)),
            "{file}"
        );
        let imp = mud::import(
            &m,
            &BTreeMap::from([(abstraction.to_string(), "picked".to_string())]),
            None,
        )
        .unwrap();
        assert!(
            imp.profile
                .flows
                .iter()
                .any(|f| f.peers.iter().any(|p| p.value == "group:picked")),
            "{file}: {:?}",
            imp.profile.flows
        );
    }
    let m = load("nist-mud/test/unittest/mud-dns-test/mudfile-dns-test.json");
    let imp = mud::import(&m, &BTreeMap::new(), None).unwrap();
    assert!(
        imp.profile
            .flows
            .iter()
            .any(|f| f.peers.iter().any(|p| p.value.starts_with("dns:")))
    );
    let _ = Abstraction::LocalNetworks;
}

#[test]
fn older_mudgee_syntax_is_read() {
    let m = load("mud-visualizer/mudgee_mudfiles/hpprinterMud.json");
    assert!(m.older_syntax);
    let imp = mud::import(&m, &BTreeMap::new(), None).unwrap();
    assert!(imp.notes[0].contains("older"));
    assert!(!imp.profile.flows.is_empty());
}

fn port_of(v: &Value) -> Option<(u16, u16)> {
    if v.is_null() {
        return None;
    }
    if let Some(p) = v.get("single").and_then(Value::as_u64) {
        return Some((p as u16, p as u16));
    }
    let r = v.get("range")?.as_array()?;
    Some((r[0].as_u64()? as u16, r[1].as_u64()? as u16))
}

/// The namib controller's parse of the same files is the answer key for ours.
#[test]
fn parsed_aces_match_the_namib_answer_key() {
    for name in ["Amazon-Echo", "August-Doorbell", "Ring-Doorbell"] {
        let m = load(&format!("namib/{name}.json"));
        let key: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("namib/{name}-Test.json"))).unwrap(),
        )
        .unwrap();
        let mut checked = 0;
        for acl in key["acllist"].as_array().unwrap() {
            let dir = match acl["packet_direction"].as_str().unwrap() {
                "FromDevice" => Direction::FromDevice,
                _ => Direction::ToDevice,
            };
            for ace in acl["ace"].as_array().unwrap() {
                let ours = m
                    .aces
                    .iter()
                    .find(|a| a.name == ace["name"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("{name}: ACE {} missing", ace["name"]));
                let mm = &ace["matches"];
                assert_eq!(ours.policy, dir, "{name}/{}", ours.name);
                assert_eq!(
                    ours.protocol.map(u64::from),
                    mm["protocol"]["num"].as_u64(),
                    "{name}/{} protocol",
                    ours.name
                );
                let dns = mm["dnsname"].as_str().map(str::to_string);
                let our_dns = ours.dst_dnsname.clone().or(ours.src_dnsname.clone());
                assert_eq!(our_dns, dns, "{name}/{} dnsname", ours.name);
                assert_eq!(
                    ours.dst_port.map(|p| (p.lo, p.hi)),
                    port_of(&mm["destination_port"]),
                    "{name}/{} dst port",
                    ours.name
                );
                assert_eq!(
                    ours.src_port.map(|p| (p.lo, p.hi)),
                    port_of(&mm["source_port"]),
                    "{name}/{} src port",
                    ours.name
                );
                let di = match mm["direction_initiated"].as_str() {
                    Some("FromDevice") => Some(Direction::FromDevice),
                    Some("ToDevice") => Some(Direction::ToDevice),
                    _ => None,
                };
                assert_eq!(
                    ours.direction_initiated, di,
                    "{name}/{} direction-initiated",
                    ours.name
                );
                if let Some(c) = mm["matches_augmentation"]["controller"].as_str() {
                    assert!(
                        ours.abstractions
                            .contains(&Abstraction::Controller(c.to_string())),
                        "{name}/{} controller",
                        ours.name
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 5, "{name}: only {checked} ACEs in the key");
    }
}

#[test]
fn non_mud_input_is_rejected_with_a_reason() {
    assert!(
        mud::parse_mud("not json")
            .unwrap_err()
            .to_string()
            .starts_with("not JSON")
    );
    assert!(
        mud::parse_mud("{}")
            .unwrap_err()
            .to_string()
            .contains("ietf-mud:mud")
    );
    let e = mud::parse_mud(r#"{"ietf-mud:mud": {}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("acls"), "{e}");
}
