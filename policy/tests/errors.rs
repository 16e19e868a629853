//! Deliberately broken files: each expected file:line:column message appears, nothing panics,
//! and every problem is reported, not only the first.

use std::path::Path;

use wardgate_policy::{ProfileSet, parse_profile, parse_site, validate, validate_profile};

fn broken(name: &str) -> (String, String) {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/broken")).join(name);
    (
        format!("broken/{name}"),
        std::fs::read_to_string(path).unwrap(),
    )
}

fn has(report: &str, needle: &str) {
    assert!(report.contains(needle), "expected `{needle}` in:\n{report}");
}

#[test]
fn unknown_key_names_line_column_and_suggests_the_key() {
    let (file, text) = broken("typo-key.yaml");
    let err = parse_profile(&file, &text).unwrap_err().to_string();
    has(&err, "broken/typo-key.yaml:5:5: error:");
    has(&err, "unknown field `protocl`");
    has(&err, "hint: did you mean `protocol`?");
}

#[test]
fn every_value_problem_is_reported_with_its_position() {
    let (file, text) = broken("bad-values.yaml");
    let p = parse_profile(&file, &text).unwrap();
    let d = validate_profile(&file, &p);
    let report = d.to_string();
    has(
        &report,
        "broken/bad-values.yaml:6:13: error: `198.51.100.300/24` is not a peer",
    );
    has(
        &report,
        "broken/bad-values.yaml:7:12: error: port 0 is not a port",
    );
    has(
        &report,
        "broken/bad-values.yaml:11:12: error: port 70000 is out of range",
    );
    has(
        &report,
        "broken/bad-values.yaml:15:12: error: range 2000-1000 is inverted",
    );
    has(
        &report,
        "broken/bad-values.yaml:19:12: error: flow 4 is icmp but lists ports: contradictory",
    );
    has(
        &report,
        "broken/bad-values.yaml:26:15: error: flow 6 contradicts flow 5",
    );
    has(
        &report,
        "broken/bad-values.yaml:32:13: error: `198.51.100.7/24` has host bits set",
    );
    has(
        &report,
        "broken/bad-values.yaml:33:12: error: empty port list",
    );
    assert_eq!(d.len(), 8, "{report}");
}

#[test]
fn site_problems_are_all_reported() {
    let (pfile, ptext) = broken("bad-values.yaml");
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    set.insert(&pfile, parse_profile(&pfile, &ptext).unwrap(), &mut d);
    let (file, text) = broken("site-broken.yaml");
    let site = parse_site(&file, &text).unwrap();
    let report = validate(&file, &site, &set).to_string();
    has(
        &report,
        "broken/site-broken.yaml:4:9: error: group `dns`: `not-a-cidr` is not a peer",
    );
    has(
        &report,
        "broken/site-broken.yaml:12:14: error: unknown profile `bad-valuez`",
    );
    has(&report, "hint: did you mean `bad-values`?");
    has(
        &report,
        "broken/site-broken.yaml:15:10: error: duplicate MAC 02:00:00:00:00:01",
    );
    has(
        &report,
        "broken/site-broken.yaml:16:17: error: duplicate address 192.0.2.10",
    );
    has(
        &report,
        "broken/site-broken.yaml:16:29: error: `192.0.2.300` is not an IP address",
    );
    has(
        &report,
        "broken/site-broken.yaml:18:14: error: device `b` is on no known gateway (`gw-2`)",
    );
    has(
        &report,
        "broken/site-broken.yaml:20:10: error: `02:00:00:00:zz:01` is not a MAC address",
    );
    // Group references from the profile are checked against the site: `pacs` exists, and the
    // profile uses no unknown group, so no false positive.
    assert!(!report.contains("unknown group `pacs`"), "{report}");
}

#[test]
fn unknown_group_points_at_the_profile_and_suggests() {
    let mut set = ProfileSet::default();
    let mut d = wardgate_policy::Diagnostics::default();
    let text = "name: p\nflows:\n  - direction: from-device\n    protocol: tcp\n    peers: [group:pcas]\n    ports: 104\n";
    set.insert("p.yaml", parse_profile("p.yaml", text).unwrap(), &mut d);
    let site = parse_site("s.yaml", "site: s\ngroups:\n  pacs: [198.51.100.10/32]\n").unwrap();
    let report = validate("s.yaml", &site, &set).to_string();
    has(&report, "p.yaml:5:13: error: unknown group `pcas`");
    has(&report, "hint: did you mean `group:pacs`?");
    // A name close to no group gets the fix that applies, not the nearest short name.
    let mut set = ProfileSet::default();
    let text = text.replace("group:pcas", "group:ris");
    set.insert("p.yaml", parse_profile("p.yaml", &text).unwrap(), &mut d);
    let site = parse_site(
        "s.yaml",
        "site: s\ngroups:\n  pacs: [198.51.100.10/32]\n  dns: [198.51.100.53/32]\n",
    )
    .unwrap();
    let report = validate("s.yaml", &site, &set).to_string();
    has(&report, "unknown group `ris`");
    has(&report, "hint: define group `ris` in the site file");
    assert!(!report.contains("did you mean"), "{report}");
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        ":",
        "- - -",
        "name: [",
        "\u{0}\u{1}",
        "flows: 5",
        "name: x\nflows:\n  - {}",
        "name: &a [*a]",
        "{{{{",
    ] {
        let _ = parse_profile("g.yaml", text);
        let _ = parse_site("g.yaml", text);
    }
}

#[test]
fn bad_application_rules_are_reported_with_their_position() {
    let (file, text) = broken("bad-app.yaml");
    let p = parse_profile(&file, &text).unwrap();
    let report = validate_profile(&file, &p).to_string();
    has(
        &report,
        "broken/bad-app.yaml:10:21: error: calling_ae `A_TITLE_THAT_IS_TOO_LONG` is 24 characters long, more than 16",
    );
    has(
        &report,
        "broken/bad-app.yaml:11:20: error: called_ae `PAC\u{1}S` holds the non-printable",
    );
    has(
        &report,
        "broken/bad-app.yaml:18:30: error: sending_application `LAB|X` holds an HL7 separator",
    );
    has(
        &report,
        "broken/bad-app.yaml:19:23: error: message_type `ADT^A01^ADT_A01^X` has more than 2 components",
    );
    has(
        &report,
        "broken/bad-app.yaml:20:27: error: `sending_facility` is an empty list",
    );
    has(
        &report,
        "broken/bad-app.yaml:22:15: error: flow 3 has an application rule but is not tcp",
    );
    // The listed values that are fine are not reported.
    assert!(!report.contains("`MODALITY1`"), "{report}");
    assert!(!report.contains("`ORU^R01`"), "{report}");
}

#[test]
fn a_wrong_grace_is_reported_at_its_position() {
    let (file, text) = broken("bad-grace.yaml");
    let p = parse_profile(&file, &text).unwrap();
    let report = validate_profile(&file, &p).to_string();
    has(
        &report,
        "broken/bad-grace.yaml:3:10: error: grace of 2700 s is longer than grace_max (600 s)",
    );
    // grace_max is checked first: a wrong one is the one reported.
    let (file, text) = broken("bad-grace-max.yaml");
    let p = parse_profile(&file, &text).unwrap();
    let report = validate_profile(&file, &p).to_string();
    has(
        &report,
        "broken/bad-grace-max.yaml:4:14: error: grace_max is not a duration",
    );
}

#[test]
fn a_wrong_detection_setting_is_reported_at_its_position() {
    let (file, text) = broken("bad-detection.yaml");
    let p = parse_profile(&file, &text).unwrap();
    let report = validate_profile(&file, &p).to_string();
    // An unknown detector at its key; a wrong value at the value.
    has(
        &report,
        "broken/bad-detection.yaml:4:3: error: detection: `scan_vertcal` is not a detector",
    );
    has(
        &report,
        "broken/bad-detection.yaml:5:11: error: detection: `beacon` has no count to set",
    );
    has(
        &report,
        "broken/bad-detection.yaml:6:11: error: detection: `often` is neither a count nor `off`",
    );
    has(
        &report,
        "broken/bad-detection.yaml:7:16: error: detection: a count of 1 for `brute_force` is out of range (2-100000)",
    );
    // The right one is not reported, and a valid map types as the class's tuning.
    assert!(!report.contains("`scan_vertical`"), "{report}");
    let text = "name: pacs\ndetection:\n  scan_vertical: 40\n  beacon: off\nflows: []\n";
    let p = parse_profile("pacs.yaml", text).unwrap();
    assert!(validate_profile("pacs.yaml", &p).to_string().is_empty());
    let tuned = wardgate_policy::detection::parse(&p.detection).unwrap_or_default();
    assert_eq!(tuned.count("scan_vertical"), Some(40));
    assert!(tuned.is_off("beacon"));
}

#[test]
fn grace_settings_lower_to_seconds() {
    let grace = |yaml: &str| {
        let text = format!("name: g\nconntrack: {yaml}\nflows: []\n");
        let p = parse_profile("g.yaml", &text).unwrap();
        assert!(validate_profile("g.yaml", &p).to_string().is_empty());
        p.conntrack.grace_s().unwrap()
    };
    assert_eq!(grace("{}"), 1800, "default: until idle, at most 30 minutes");
    assert_eq!(grace("{grace: until_idle, grace_max: 2h}"), 7200);
    assert_eq!(grace("{grace: 0}"), 0);
    assert_eq!(grace("{grace: 90s}"), 90);
    assert_eq!(grace("{grace: 600}"), 600);
    assert_eq!(grace("{grace: 1h, grace_max: 1h}"), 3600);
}
