use wardgate_analysis::flow::{FlowDirection, TcpOutcome};

use super::*;

fn denied(port: u16, t_ns: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: "pump-3a-bed12".into(),
            id: Some(7),
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: "192.0.2.10".parse().unwrap(),
        device_port: 40000,
        peer: "203.0.113.9".parse().unwrap(),
        peer_port: port,
        proto: 6,
        port,
        icmp_type: None,
        vlan: None,
        packets_out: 1,
        bytes_out: 60,
        packets_in: 0,
        bytes_in: 0,
        first_seen_ns: t_ns,
        last_seen_ns: t_ns,
        tcp: Some(TcpOutcome::NoAnswer),
        outcome: wardgate_analysis::FlowOutcome::Denied,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}

#[test]
fn a_scan_is_one_alert_id_updated_at_most_every_30_s_and_finally_when_it_closes() {
    let mut d = Detection::new(&DetectConfig::default(), Baselines::default());
    let t0 = 1_700_000_000_000_000_000u64;
    let ms = 1_000_000u64;
    let s = 1_000 * ms;
    let scans = |v: Vec<wardgate_proto::v1::Alert>| -> Vec<wardgate_proto::v1::Alert> {
        v.into_iter()
            .filter(|a| a.detector == "scan_vertical")
            .collect()
    };
    let mut sent = Vec::new();
    for p in 1..=40u16 {
        let r = denied(p, t0 + u64::from(p) * ms);
        sent.extend(d.observe(&[r], t0 + u64::from(p) * ms));
    }
    let sent = scans(sent);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let a = &sent[0];
    assert_eq!(
        (a.device.as_str(), a.dst.as_str()),
        ("pump-3a-bed12", "203.0.113.9")
    );
    assert_eq!(a.mitre_technique, "T1046");
    // Observed when the packet that raised it passed: the 8th port (without a site the pump
    // is a general host, whose limit within 2 s is 8).
    assert_eq!(a.observed_unix_ms, (t0 / ms) as i64 + 8);
    assert!(scans(d.flush(t0 + 10 * s)).is_empty(), "held back for 30 s");
    // 30 s later the held-back update goes out under the same id, with the higher count.
    let update = scans(d.flush(t0 + 31 * s));
    assert_eq!(update.len(), 1);
    assert_eq!(update[0].id, a.id, "one alert, updated in place");
    assert_eq!((a.count, update[0].count), (1, 33));
    assert!(scans(d.flush(t0 + 32 * s)).is_empty(), "sent once");
    // A probe 31 s after that is sent at once (nothing sent for 30 s) ...
    let now = t0 + 62 * s;
    let later = scans(d.observe(&[denied(41, now)], now));
    assert_eq!((later.len(), later[0].count), (1, 34));
    assert_eq!(later[0].id, a.id);
    // ... one 1 s later is held, and goes out when the finding closes (no detection for the
    // aggregation window, 1 h), after which the agent forgets it.
    let now = t0 + 63 * s;
    assert!(scans(d.observe(&[denied(42, now)], now)).is_empty());
    let closed = scans(d.flush(t0 + 63 * s + 3_601 * s));
    assert_eq!((closed.len(), closed[0].count), (1, 35));
    assert_eq!(closed[0].id, a.id);
    assert!(d.sent.is_empty(), "closed findings are forgotten");
    assert_eq!(d.aggregation().0, 0);
}

#[test]
fn at_the_stop_held_back_updates_go_out_at_once() {
    let mut d = Detection::new(&DetectConfig::default(), Baselines::default());
    let t0 = 1_700_000_000_000_000_000u64;
    let ms = 1_000_000u64;
    let mut first = Vec::new();
    for p in 1..=20u16 {
        first.extend(d.observe(&[denied(p, t0 + u64::from(p) * ms)], t0 + u64::from(p) * ms));
    }
    let first: Vec<_> = first
        .into_iter()
        .filter(|a| a.detector == "scan_vertical")
        .collect();
    assert_eq!((first.len(), first[0].count), (1, 1));
    // Within 30 s nothing more is due ...
    assert!(d.flush(t0 + 40 * ms).is_empty());
    // ... but the stop sends the latest version, once.
    let last = d.flush_held();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].id, first[0].id, "the same alert, updated");
    assert_eq!(last[0].count, 13, "ports 8 to 20");
    assert!(d.flush_held().is_empty(), "sent once");
}

#[test]
fn arp_spoof_events_become_claims_and_other_events_do_not() {
    use crate::datapath::convert::{DatapathEvent, EventKind};
    let mut ev = DatapathEvent {
        kind: EventKind::Spoof,
        reason: None,
        device_id: 7,
        policy_id: 3,
        rule_id: 0,
        generation: 1,
        proto: 0,
        from_device: true,
        src: "192.0.2.10".parse().unwrap(),
        sport: 2,
        dst: "192.0.2.1".parse().unwrap(),
        dport: 2,
        src_mac: [2, 0, 0, 0, 0, 0xee],
        app: None,
    };
    let c = claim_of(&ev, 5).unwrap();
    assert_eq!(
        (c.kind, c.mac, c.ts_ns),
        (ClaimKind::ArpReply, Mac([2, 0, 0, 0, 0, 0xee]), 5)
    );
    assert_eq!(c.addr, ev.src);
    ev.proto = 6;
    assert!(claim_of(&ev, 5).is_none(), "an IP spoof is no ARP claim");
    ev.proto = 0;
    ev.kind = EventKind::Deny;
    assert!(claim_of(&ev, 5).is_none());
}

#[test]
fn site_facts_give_each_device_its_profile_as_class() {
    use wardgate_policy::desired::{DeviceEntry, MacAddr, Mode, PolicyEntry};
    let dev = DeviceEntry {
        device_id: 7,
        name: "pump-3a-bed12".into(),
        addrs: vec!["192.0.2.10".parse().unwrap()],
        mac: MacAddr([2, 0, 0, 0, 0, 7]),
        policy_id: 3,
        mode: Mode::Enforce,
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    };
    let policy = PolicyEntry {
        policy_id: 3,
        profile: "infusion-pump".into(),
        profile_version: 1,
        rules: vec![],
        sensitivity: wardgate_policy::profile::Sensitivity::High,
        detection: {
            let mut t = wardgate_policy::detection::ClassDetection::default();
            t.insert(
                "scan_vertical",
                wardgate_policy::detection::Tuning::Count(40),
            )
            .unwrap();
            t
        },
    };
    let mut state = wardgate_policy::lower::lower("gw", 1, vec![dev], vec![policy]).unwrap();
    state
        .groups
        .insert("pacs".into(), vec!["198.51.100.10/32".parse().unwrap()]);
    let site = site_facts(&state);
    let f = site.owner_of_addr("192.0.2.10".parse().unwrap()).unwrap();
    assert_eq!(f.class.as_deref(), Some("infusion-pump"));
    assert_eq!(f.gateway.as_deref(), Some("gw"));
    assert!(site.is_inside("192.0.2.10".parse().unwrap()));
    // As `replay` reads them from the site and profile files: the class's sensitivity, and
    // the site's groups (inside, and named for baselines kept by group).
    assert_eq!(f.sensitivity, wardgate_policy::profile::Sensitivity::High);
    // And the class's detector tuning (`detection:`), as the generation carries it.
    assert_eq!(f.detection.count("scan_vertical"), Some(40));
    let pacs = "198.51.100.10".parse().unwrap();
    assert!(site.is_inside(pacs));
    assert_eq!(site.group_of(pacs), Some("pacs"));
}

/// Continuations feed the detectors but not the controller's queue (an older controller would
/// count each as a flow).
#[test]
fn continuations_reach_the_detectors_and_not_the_controller() {
    let queue = crate::flow_report::FlowQueue::new(100, crate::metrics::Live::default());
    let out = Outputs {
        records: Some(queue.clone()),
        ..Outputs::default()
    };
    let mut d = Detection::new(&DetectConfig::default(), Baselines::default());
    let first = FlowRecord {
        outcome: wardgate_analysis::FlowOutcome::Established,
        tcp: Some(TcpOutcome::Established),
        ..denied(443, 1_700_000_000_000_000_000)
    };
    let mut records = vec![
        first.clone(),
        FlowRecord {
            continuation: true,
            ..first.clone()
        },
        FlowRecord {
            continuation: true,
            ..first
        },
    ];
    deliver(&mut records, &mut d, Clock::default(), &out);
    assert!(records.is_empty());
    assert_eq!(queue.len(), 1);
}
