use std::collections::HashMap;

use super::*;

const S: u64 = NS;

fn key(port: u16) -> CtKey {
    let mut k = CtKey {
        proto: TCP,
        family: wardgate_common::FAMILY_V4,
        dev_is_a: 1,
        ..Default::default()
    };
    k.a[..4].copy_from_slice(&[192, 0, 2, 10]);
    k.b[..4].copy_from_slice(&[198, 51, 100, 10]);
    k.a_port_be = 40000u16.to_be_bytes();
    k.b_port_be = port.to_be_bytes();
    k
}

fn opened(port: u16, ts: u64, denied: bool) -> FlowOpened {
    FlowOpened {
        key: key(port),
        ts_ns: ts,
        device_id: 7,
        policy_id: 1,
        rule_id: if denied { 0 } else { 41 },
        generation: 3,
        denied,
        untracked: false,
        from_device: true,
        device: "192.0.2.10".parse().unwrap(),
        device_port: 40000,
        peer: "198.51.100.10".parse().unwrap(),
        peer_port: port,
        proto: TCP,
        icmp_type: 0,
        tcp_flags: TCP_SYN,
        ip_len: 60,
        dev_mac: [2, 0, 0, 0, 0, 7],
    }
}

fn dev() -> DeviceRef {
    DeviceRef {
        name: "pump".into(),
        id: Some(7),
        mac: None,
    }
}

fn counters(last: u64, fwd: u64, rev: u64, rev_flags: u8) -> FlowCounters {
    FlowCounters {
        last_seen_ns: last,
        packets_fwd: fwd,
        bytes_fwd: fwd * 100,
        packets_rev: rev,
        bytes_rev: rev * 1000,
        tcp_flags_fwd: TCP_SYN,
        tcp_flags_rev: rev_flags,
        idle_timeout_s: 300,
    }
}

const CLOCK: Clock = Clock {
    offset_ns: 1_000 * 1_000_000_000,
};

#[test]
fn a_denied_contact_is_observed_at_once_and_its_retransmissions_join_it() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&opened(445, S, true), dev(), CLOCK, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tcp, Some(TcpOutcome::NoAnswer));
    assert_eq!(out[0].first_seen_ns, 1_001 * S);
    assert_eq!((out[0].port, out[0].rule), (445, None));
    t.open(&opened(445, 2 * S, true), dev(), CLOCK, &mut out);
    assert_eq!(out.len(), 1, "a retransmission is the same contact");
    // Held for denied_hold after its last packet, then finished without a second observation.
    t.sweep(11 * S, CLOCK, |_| None, &mut out);
    assert_eq!(t.len(), 1);
    t.sweep(12 * S, CLOCK, |_| None, &mut out);
    assert!(t.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(t.stats.denied, 1);
}

#[test]
fn a_refused_contact_is_observed_at_the_next_sweep_an_answered_one_when_it_ends() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&opened(23, S, false), dev(), CLOCK, &mut out);
    t.open(&opened(104, S, false), dev(), CLOCK, &mut out);
    assert!(out.is_empty());
    let mut ct = HashMap::new();
    ct.insert(key(23), counters(S, 1, 1, TCP_RST));
    ct.insert(key(104), counters(S, 3, 2, TCP_SYN | 0x10));
    t.sweep(S + S / 10, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].port, out[0].tcp), (23, Some(TcpOutcome::Refused)));
    // The answered flow runs on, its counters refreshed; it is observed once, when its entry
    // is gone, with its last counts.
    ct.insert(key(104), counters(5 * S, 10, 8, TCP_SYN | 0x10));
    t.sweep(6 * S, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 1);
    ct.remove(&key(104));
    t.sweep(7 * S, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 2);
    let r = &out[1];
    assert_eq!(r.tcp, Some(TcpOutcome::Established));
    assert_eq!(
        (r.packets_out, r.bytes_out, r.packets_in, r.bytes_in),
        (10, 1000, 8, 8000)
    );
    assert_eq!(r.last_seen_ns, 1_005 * S);
    assert_eq!(r.rule, Some(41));
    assert_eq!(r.direction, FlowDirection::Opened);
}

#[test]
fn an_unanswered_contact_fails_after_the_wait_and_a_long_flow_is_observed_once_running() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&opened(80, S, false), dev(), CLOCK, &mut out);
    t.open(&opened(2575, S, false), dev(), CLOCK, &mut out);
    let mut ct = HashMap::new();
    ct.insert(key(80), counters(S, 2, 0, 0));
    ct.insert(key(2575), counters(S, 1, 1, TCP_SYN));
    t.sweep(S + S / 2, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert!(out.is_empty(), "still within the answer wait");
    t.sweep(2 * S + 1, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tcp, Some(TcpOutcome::NoAnswer));
    for s in [30, 61, 62] {
        ct.insert(key(2575), counters(s * S, s, s, TCP_SYN));
        t.sweep(s * S, CLOCK, |k| ct.get(k).copied(), &mut out);
    }
    assert_eq!(
        out.len(),
        2,
        "observed once past long_running, not at every sweep"
    );
    assert_eq!(out[1].port, 2575);
    // Idle past its timeout: finished, not observed again.
    t.sweep(62 * S + 300 * S, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(t.len(), 0);
}

#[test]
fn sweeps_are_bounded_and_the_table_is_capped() {
    let cfg = LiveConfig {
        per_sweep: 10,
        max_flows: 50,
        ..LiveConfig::default()
    };
    let mut t = LiveFlows::new(cfg);
    let mut out = Vec::new();
    for p in 0..60 {
        t.open(&opened(p, S, false), dev(), CLOCK, &mut out);
    }
    assert_eq!((t.len(), t.stats.table_full), (50, 10));
    let mut lookups = 0;
    t.sweep(
        S,
        CLOCK,
        |_| {
            lookups += 1;
            None
        },
        &mut out,
    );
    assert_eq!(lookups, 10);
    assert_eq!(t.len(), 40);
}

#[test]
fn payload_records_set_the_flows_app_identity_before_it_is_observed() {
    use wardgate_analysis::app::AppIdentity;
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    let msh = b"\x0bMSH|^~\\&|LABSYS|LABFAC|EMR|WARDFAC|20240101||ORU^R01|42|P|2.5\r";
    let seg = |forward: bool, seq: u32, data: &'static [u8], port: u16| PayloadSegment {
        key: key(port),
        forward,
        seq,
        seg_len: data.len() as u16,
        data,
    };
    // No held flow: counted, nothing else.
    assert!(t.payload(&seg(true, 1, msh, 2575)).is_none());
    assert_eq!(t.stats.payload_unmatched, 1);
    t.open(&opened(2575, S, false), dev(), CLOCK, &mut out);
    // The header in two segments, in order.
    assert!(t.payload(&seg(true, 1000, &msh[..5], 2575)).is_none());
    let rec = t
        .payload(&seg(true, 1005, &msh[5..], 2575))
        .expect("identified");
    let Some(AppIdentity::Hl7(h)) = &rec.app else {
        panic!("{:?}", rec.app);
    };
    assert_eq!(
        (
            h.sending_application.as_str(),
            h.sending_facility.as_str(),
            h.receiving_application.as_str(),
            h.receiving_facility.as_str()
        ),
        ("LABSYS", "LABFAC", "EMR", "WARDFAC")
    );
    assert_eq!((t.stats.payload, t.stats.identified), (2, 1));
    // The record the detectors see when the flow ends carries it.
    t.sweep(2 * S, CLOCK, |_| None, &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].app, Some(AppIdentity::Hl7(_))));
}

#[test]
fn at_stop_every_held_flow_is_finished_as_it_stands_and_none_observed_twice() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    // An answered flow (held for minutes, like UDP), one still young, and a denied contact
    // (observed at once).
    t.open(&opened(53, S, false), dev(), CLOCK, &mut out);
    t.open(&opened(2575, S, false), dev(), CLOCK, &mut out);
    t.open(&opened(445, S, true), dev(), CLOCK, &mut out);
    assert_eq!(out.len(), 1, "the denied contact");
    let mut ct = HashMap::new();
    ct.insert(key(53), counters(S, 1, 1, TCP_SYN));
    ct.insert(key(2575), counters(S, 1, 0, 0));
    t.sweep(S + S / 10, CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(out.len(), 1, "nothing finished yet");
    // By the stop the first flow ran on; the young one's entry is gone.
    ct.insert(key(53), counters(3 * S, 4, 4, TCP_SYN));
    ct.remove(&key(2575));
    let held = t.finish_all(CLOCK, |k| ct.get(k).copied(), &mut out);
    assert_eq!(held, 3);
    assert!(t.is_empty());
    let ports: Vec<u16> = out[1..].iter().map(|r| r.port).collect();
    assert_eq!(ports.len(), 2, "the denied contact is not observed again");
    assert!(ports.contains(&53) && ports.contains(&2575), "{ports:?}");
    let r = out.iter().find(|r| r.port == 53).unwrap();
    assert_eq!(
        (r.packets_out, r.bytes_out, r.packets_in, r.bytes_in),
        (4, 400, 4, 4000),
        "its counters as they stood at the stop"
    );
    assert_eq!(r.last_seen_ns, 1_003 * S);
    assert_eq!(t.stats.finished, 3);
    // Nothing left to give up.
    t.sweep(100 * S, CLOCK, |_| None, &mut out);
    assert_eq!(out.len(), 3);
}

/// The outcome each record carries, from what the conntrack entry holds: TCP flags and packets
/// each way (and the datapath's drop, which makes no entry).
#[test]
fn outcomes_come_from_the_conntrack_entry_flags_and_packets_each_way() {
    const ACK: u8 = 0x10;
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    // Denied: observed at once as denied.
    t.open(&opened(445, S, true), dev(), CLOCK, &mut out);
    assert_eq!(out.remove(0).outcome, FlowOutcome::Denied);
    // Three TCP contacts: SYN-ACK back, RST back, nothing back.
    for port in [443, 22, 23] {
        t.open(&opened(port, S, false), dev(), CLOCK, &mut out);
    }
    // UDP: one answered, one not.
    let udp = |port: u16| {
        let mut o = opened(port, S, false);
        o.proto = 17;
        o.key.proto = 17;
        o.tcp_flags = 0;
        o
    };
    t.open(&udp(53), dev(), CLOCK, &mut out);
    t.open(&udp(69), dev(), CLOCK, &mut out);
    assert!(out.is_empty());
    let mut entries: HashMap<CtKey, FlowCounters> = HashMap::new();
    entries.insert(key(443), counters(S, 3, 2, TCP_SYN | ACK));
    entries.insert(key(22), counters(S, 1, 1, TCP_RST | ACK));
    entries.insert(key(23), counters(S, 2, 0, 0));
    let mut k53 = key(53);
    k53.proto = 17;
    let mut k69 = key(69);
    k69.proto = 17;
    entries.insert(k53, counters(S, 1, 1, 0));
    entries.insert(k69, counters(S, 4, 0, 0));
    // Past the answer wait: the failed ones are observed; then the entries go and the rest end.
    t.sweep(3 * S, CLOCK, |k| entries.get(k).copied(), &mut out);
    t.sweep(4 * S, CLOCK, |_| None, &mut out);
    let got: HashMap<(u8, u16), FlowOutcome> =
        out.iter().map(|r| ((r.proto, r.port), r.outcome)).collect();
    assert_eq!(got[&(6, 443)], FlowOutcome::Established);
    assert_eq!(got[&(6, 22)], FlowOutcome::Refused);
    assert_eq!(got[&(6, 23)], FlowOutcome::Unanswered);
    assert_eq!(got[&(17, 53)], FlowOutcome::Established);
    assert_eq!(got[&(17, 69)], FlowOutcome::Unanswered);
    assert_eq!(got.len(), 5, "{out:#?}");
}
