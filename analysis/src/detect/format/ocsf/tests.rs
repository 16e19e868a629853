use super::*;
use crate::detect::format::cef::tests::sample;

/// The attributes OCSF 1.3 marks required for the class (base event plus class).
const FINDING_REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "finding_info",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];
const NETWORK_REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "dst_endpoint",
    "metadata",
    "severity_id",
    "src_endpoint",
    "time",
    "type_uid",
];

#[test]
fn detection_finding_fields_and_enums() {
    let f = sample();
    let v = detection_finding(&f, ACTIVITY_CREATE);
    for k in FINDING_REQUIRED {
        assert!(!v[k].is_null(), "{k} missing");
    }
    assert_eq!(v["class_uid"], 2004);
    assert_eq!(v["category_uid"], 2);
    assert_eq!(v["type_uid"], 200401);
    assert_eq!(v["activity_id"], 1);
    // severity_id: 0 Unknown, 1 Informational ... 5 Critical, 6 Fatal, 99 Other.
    assert_eq!(v["severity_id"], 4);
    assert_eq!(v["severity"], "High");
    assert_eq!(v["time"], 1_700_000_003_250u64);
    assert_eq!(v["metadata"]["product"]["name"], "wardgate");
    assert_eq!(v["metadata"]["product"]["vendor_name"], "wardgate");
    assert_eq!(v["metadata"]["version"], OCSF_VERSION);
    assert_eq!(v["finding_info"]["uid"], "wg-1");
    assert_eq!(v["finding_info"]["title"], "Port scan (vertical)");
    assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1046");
    assert_eq!(v["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0007");
    // Each event has its own uid; the finding's is `finding_info.uid`.
    assert_ne!(v["metadata"]["uid"], v["finding_info"]["uid"]);
    assert_eq!(v["confidence_id"], 3);
    assert_eq!(v["device"]["type_id"], 7);
    assert_eq!(v["evidences"][0]["src_endpoint"]["ip"], "192.0.2.10");
    assert_eq!(v["evidences"][0]["dst_endpoint"]["port"], 22);
    assert_eq!(v["evidences"][0]["connection_info"]["direction_id"], 2);
    let a = &v["anomaly_analyses"][0];
    assert_eq!(a["anomalies"][0]["observation_parameter"], "distinct_ports");
    assert_eq!(a["anomalies"][0]["observations"][0]["value"], "40");
    assert_eq!(a["baselines"][0]["observation_parameter"], "bytes_per_hour");
    assert_eq!(a["baselines"][0]["observations"][0]["value"], "1000");
    assert_eq!(v["confidence_score"], 80);
    assert_eq!(v["count"], 33);
    assert_eq!(
        v["remediation"]["desc"],
        "wardctl mode pump|3a=bed\\12 quarantine"
    );
    let u = detection_finding(&f, ACTIVITY_UPDATE);
    assert_eq!(
        (u["type_uid"].as_u64(), u["activity_name"].as_str()),
        (Some(200402), Some("Update"))
    );
    // A receiver deduplicating by `metadata.uid` keeps the update; the finding is the same.
    assert_ne!(u["metadata"]["uid"], v["metadata"]["uid"]);
    assert_eq!(u["finding_info"]["uid"], v["finding_info"]["uid"]);
}

#[test]
fn ics_techniques_carry_ics_tactics() {
    let mut f = sample();
    for (technique, tactic) in [
        ("T0846", "TA0102"),
        ("T0840", "TA0102"),
        ("T0886", "TA0109"),
        ("T0866", "TA0109"),
        ("T0869", "TA0101"),
        ("T0885", "TA0101"),
        ("T0814", "TA0107"),
        ("T0813", "TA0105"),
        ("T0830", "TA0100"),
        ("T1046", "TA0007"),
    ] {
        f.technique.id = technique.into();
        let v = detection_finding(&f, ACTIVITY_CREATE);
        assert_eq!(
            v["finding_info"]["attacks"][0]["tactic"]["uid"], tactic,
            "{technique}"
        );
    }
}

#[test]
fn network_activity_for_a_deny() {
    let d = DenyRecord {
        id: "gw-1:77".into(),
        time_ns: 1_700_000_000_000_000_000,
        gateway: Some("gw-1".into()),
        device: DeviceRef {
            name: "pump-1".into(),
            id: Some(1),
            mac: None,
        },
        direction: FlowDirection::Opened,
        src: "192.0.2.10".parse().unwrap(),
        src_port: 40000,
        dst: "203.0.113.5".parse().unwrap(),
        dst_port: 445,
        proto: 6,
        reason: "policy".into(),
        enforced: true,
        generation: Some(4),
    };
    let v = network_activity(&d);
    for k in NETWORK_REQUIRED {
        assert!(!v[k].is_null(), "{k} missing");
    }
    assert_eq!(v["class_uid"], 4001);
    assert_eq!(v["category_uid"], 4);
    assert_eq!(v["type_uid"], 400105);
    assert_eq!(v["action_id"], 2);
    assert_eq!(v["disposition_id"], 2);
    assert_eq!(v["dst_endpoint"]["port"], 445);
    assert_eq!(v["metadata"]["uid"], "gw-1:77");
    let mut m = d.clone();
    m.enforced = false;
    assert_eq!(network_activity(&m)["severity_id"], 1);
}
