use super::*;
use wardgate_analysis::detect::finding::Severity;

fn full() -> Finding {
    let device = DeviceRef {
        name: "pump-3".into(),
        id: Some(7),
        mac: Some("02:00:00:00:00:03".parse().unwrap()),
    };
    let mut f = Finding::new(
        "scan_vertical",
        &device,
        1_700_000_000_123_456_789,
        Severity::High,
        0.85,
        Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
    );
    f.id = "1700000000000-4".into();
    f.first_seen_ns = 1_700_000_000_000_000_001;
    f.count = 983;
    f.gateway = Some("gw-icu".into());
    f.class = Some("infusion-pump".into());
    f.profile_version = Some(3);
    f.location = Some("ICU bed 4".into());
    f.asset_id = Some("BM-0042".into());
    f.rule = Some(12);
    f.generation = Some(9);
    f.rule_name = Some("dicom-to-pacs".into());
    f.mode = Some("enforce".into());
    f.peer = Some("2001:db8::5".parse().unwrap());
    f.summary = "40 ports in 3 s".into();
    f.evidence = Evidence {
        window_start_ns: f.first_seen_ns,
        window_end_ns: f.time_ns,
        metrics: vec![
            Metric::new("distinct_ports", 40.0).threshold(8.0),
            Metric::new("bytes_per_hour", 1.5e6).baseline(2e5, 3e4),
        ],
        ports: vec![22, 80, 443],
        peers: vec!["192.0.2.9".parse().unwrap()],
        names: vec!["smb".into()],
    };
    f.flows = vec![FlowRef {
        direction: FlowDirection::Received,
        device_addr: "192.0.2.3".parse().unwrap(),
        device_port: 104,
        peer: "198.51.100.7".parse().unwrap(),
        peer_port: 40_000,
        proto: 6,
        first_seen_ns: 1,
        last_seen_ns: 2,
        packets: 3,
        bytes: 400,
    }];
    f
}

#[test]
fn a_finding_survives_the_trip_through_the_alert_field_for_field() {
    let f = full();
    let a = pb::Alert::from(&f);
    assert_eq!(a.kind, "anomaly");
    assert_eq!(
        (a.severity.as_str(), a.technique_matrix.as_str()),
        ("high", "ics")
    );
    // The flow's initiator is src: the peer opened it.
    assert_eq!((a.src.as_str(), a.src_port), ("198.51.100.7", 40_000));
    assert_eq!(
        (a.dst.as_str(), a.dst_port, a.protocol),
        ("192.0.2.3", 104, 6)
    );
    assert_eq!(a.observed_unix_ms, 1_700_000_000_123);
    let back = Finding::try_from(&a).unwrap();
    assert_eq!(back, f);
    // And through the wire.
    let bytes = prost::Message::encode_to_vec(&a);
    let decoded = <pb::Alert as prost::Message>::decode(bytes.as_slice()).unwrap();
    assert_eq!(Finding::try_from(decoded).unwrap(), f);
}

#[test]
fn datapath_findings_carry_their_kind() {
    let mut f = full();
    f.detector = datapath::DENY.into();
    f.technique = Technique::new("", "", Matrix::Ics);
    let a = pb::Alert::from(&f);
    assert_eq!((a.kind.as_str(), a.technique_matrix.as_str()), ("deny", ""));
    assert_eq!(Finding::try_from(&a).unwrap(), f);
    f.detector = datapath::SPOOF.into();
    assert_eq!(pb::Alert::from(&f).kind, "spoof");
}

/// What an agent before the finding fields sent.
fn legacy() -> pb::Alert {
    pb::Alert {
        id: "17-1".into(),
        device: "pump-3".into(),
        profile: "infusion-pump".into(),
        rule_id: 4,
        kind: "would_deny".into(),
        severity: "medium".into(),
        mode: "monitor".into(),
        src: "192.0.2.3".into(),
        src_port: 5000,
        dst: "203.0.113.9".into(),
        dst_port: 445,
        protocol: 6,
        observed_unix_ms: 1_700_000_000_123,
        generation: 2,
        rule_name: "".into(),
        profile_version: 1,
        ..Default::default()
    }
}

#[test]
fn an_alert_of_an_older_agent_is_the_datapath_detector_of_its_kind() {
    let f = Finding::try_from(legacy()).unwrap();
    assert_eq!(f.detector, "datapath_would_deny");
    assert_eq!((f.count, f.confidence), (1, 1.0));
    assert_eq!(f.time_ns, 1_700_000_000_123_000_000);
    assert_eq!((f.first_seen_ns, f.last_seen_ns), (f.time_ns, f.time_ns));
    assert_eq!(f.mode.as_deref(), Some("monitor"));
    assert_eq!(
        (f.rule, f.generation, f.profile_version),
        (Some(4), Some(2), Some(1))
    );
    let fl = &f.flows[0];
    assert_eq!(
        (
            fl.device_addr.to_string(),
            fl.peer.to_string(),
            fl.peer_port,
            fl.proto
        ),
        ("192.0.2.3".into(), "203.0.113.9".into(), 445, 6)
    );
}

#[test]
fn every_bad_field_is_named() {
    let good = pb::Alert::from(&full());
    type Spoil = Box<dyn Fn(&mut pb::Alert)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("id", Box::new(|a| a.id.clear())),
        // A 0.1.0 agent's alert (the string alone), and a number this release does not know.
        (
            "severity",
            Box::new(|a| {
                a.severity_enum = 0;
                a.severity = "urgent".into();
            }),
        ),
        (
            "severity",
            Box::new(|a| {
                a.severity_enum = 0;
                a.severity.clear();
            }),
        ),
        ("severity", Box::new(|a| a.severity_enum = 9)),
        (
            "mode",
            Box::new(|a| {
                a.mode_enum = 0;
                a.mode = "lockdown".into();
            }),
        ),
        ("kind", Box::new(|a| a.kind = "deny".into())),
        ("confidence", Box::new(|a| a.confidence = 1.5)),
        ("confidence", Box::new(|a| a.confidence = f64::NAN)),
        ("observed_unix_ms", Box::new(|a| a.observed_unix_ms += 1)),
        (
            "first_seen_unix_ns",
            Box::new(|a| a.first_seen_unix_ns = u64::MAX),
        ),
        ("count", Box::new(|a| a.count = 0)),
        (
            "technique_matrix",
            Box::new(|a| a.technique_matrix = "mobile".into()),
        ),
        ("technique_matrix", Box::new(|a| a.technique_matrix.clear())),
        ("device_mac", Box::new(|a| a.device_mac = "02:00".into())),
        ("peer", Box::new(|a| a.peer = "pacs".into())),
        (
            "flows[0].direction",
            Box::new(|a| a.flows[0].direction = "up".into()),
        ),
        (
            "flows[0].device_addr",
            Box::new(|a| a.flows[0].device_addr = "x".into()),
        ),
        (
            "flows[0].peer_port",
            Box::new(|a| a.flows[0].peer_port = 65_536),
        ),
        ("flows[0].protocol", Box::new(|a| a.flows[0].protocol = 256)),
        (
            "flows[0].first_seen_unix_ns",
            Box::new(|a| a.flows[0].first_seen_unix_ns = 9),
        ),
        (
            "flows",
            Box::new(|a| a.flows = vec![a.flows[0].clone(); MAX_FLOWS + 1]),
        ),
        (
            "evidence.ports[1]",
            Box::new(|a| a.evidence.as_mut().unwrap().ports[1] = 70_000),
        ),
        (
            "evidence.peers[0]",
            Box::new(|a| a.evidence.as_mut().unwrap().peers[0] = "".into()),
        ),
        (
            "evidence.ports",
            Box::new(|a| a.evidence.as_mut().unwrap().ports = vec![1; MAX_LISTED + 1]),
        ),
        (
            "evidence.metrics[0].name",
            Box::new(|a| a.evidence.as_mut().unwrap().metrics[0].name.clear()),
        ),
        (
            "evidence.metrics[1].baseline",
            Box::new(|a| a.evidence.as_mut().unwrap().metrics[1].baseline = Some(f64::INFINITY)),
        ),
        (
            "evidence.window_start_unix_ns",
            Box::new(|a| a.evidence.as_mut().unwrap().window_start_unix_ns = u64::MAX),
        ),
    ];
    for (field, spoil) in cases {
        let mut a = good.clone();
        spoil(&mut a);
        let e = Finding::try_from(&a).expect_err(field);
        assert_eq!(e.at, field, "{e}");
        assert!(e.to_string().starts_with("alert `"), "{e}");
    }
    let mut a = legacy();
    a.kind = "anomaly".into();
    assert_eq!(Finding::try_from(&a).unwrap_err().at, "detector");
    let mut a = legacy();
    a.src = "not-an-address".into();
    assert_eq!(Finding::try_from(&a).unwrap_err().at, "src");
}
