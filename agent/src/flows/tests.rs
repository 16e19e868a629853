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
        rule: None,
        app: None,
    }
}

#[test]
fn a_scan_opens_one_alert_and_its_updates_are_sent_at_most_every_30_s() {
    let mut d = Detection::new(&DetectConfig::default(), Baselines::default());
    let t0 = 1_700_000_000_000_000_000u64;
    let ms = 1_000_000u64;
    let mut sent = Vec::new();
    for p in 1..=40u16 {
        let r = denied(p, t0 + u64::from(p) * ms);
        sent.extend(d.observe(&[r], t0 + u64::from(p) * ms));
    }
    let scans: Vec<_> = sent
        .iter()
        .filter(|a| a.detector == "scan_vertical")
        .collect();
    assert_eq!(scans.len(), 1, "{sent:?}");
    let a = scans[0];
    assert_eq!(
        (a.device.as_str(), a.dst.as_str()),
        ("pump-3a-bed12", "203.0.113.9")
    );
    assert_eq!(a.mitre_technique, "T1046");
    // Observed when the packet that raised it passed: the 15th port (without a site the pump
    // is a general host, whose limit is 15).
    assert_eq!(a.observed_unix_ms, (t0 / ms) as i64 + 15);
    // 30 s later the next probe sends the updated finding under a new id.
    let later = d.observe(&[denied(41, t0 + 31_000 * ms)], t0 + 31_000 * ms);
    let update: Vec<_> = later
        .iter()
        .filter(|x| x.detector == "scan_vertical")
        .collect();
    assert_eq!(update.len(), 1);
    assert_ne!(update[0].id, a.id);
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
    };
    let policy = PolicyEntry {
        policy_id: 3,
        profile: "infusion-pump".into(),
        profile_version: 1,
        rules: vec![],
    };
    let state = wardgate_policy::lower::lower("gw", 1, vec![dev], vec![policy]).unwrap();
    let site = site_facts(&state);
    let f = site.owner_of_addr("192.0.2.10".parse().unwrap()).unwrap();
    assert_eq!(f.class.as_deref(), Some("infusion-pump"));
    assert_eq!(f.gateway.as_deref(), Some("gw"));
    assert!(site.is_inside("192.0.2.10".parse().unwrap()));
}
