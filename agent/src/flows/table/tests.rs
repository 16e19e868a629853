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
    t.sweep(11 * S, CLOCK, entries(|_| None), &mut out);
    assert_eq!(t.len(), 1);
    t.sweep(12 * S, CLOCK, entries(|_| None), &mut out);
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
    t.sweep(S + S / 10, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].port, out[0].tcp), (23, Some(TcpOutcome::Refused)));
    // The answered flow runs on, its counters refreshed; it is observed once, when its entry
    // is gone, with its last counts.
    ct.insert(key(104), counters(5 * S, 10, 8, TCP_SYN | 0x10));
    t.sweep(6 * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1);
    ct.remove(&key(104));
    t.sweep(7 * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
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
    t.sweep(S + S / 2, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert!(out.is_empty(), "still within the answer wait");
    t.sweep(2 * S + 1, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tcp, Some(TcpOutcome::NoAnswer));
    for s in [30, 61, 62] {
        ct.insert(key(2575), counters(s * S, s, s, TCP_SYN));
        t.sweep(s * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    }
    assert_eq!(
        out.len(),
        2,
        "observed once past long_running, not at every sweep"
    );
    assert_eq!(out[1].port, 2575);
    // Idle past its timeout: finished, and what it sent after the snapshot observed.
    t.sweep(
        62 * S + 300 * S,
        CLOCK,
        entries(|k| ct.get(k).copied()),
        &mut out,
    );
    assert_eq!(out.len(), 3);
    assert_eq!((out[2].packets_out, out[2].packets_in), (1, 1));
    assert!(!out[1].continuation && out[2].continuation);
    assert_eq!(t.len(), 0);
}

/// The four counters of records, summed.
fn totals(out: &[FlowRecord]) -> (u64, u64, u64, u64) {
    out.iter().fold((0, 0, 0, 0), |t, r| {
        (
            t.0 + r.packets_out,
            t.1 + r.bytes_out,
            t.2 + r.packets_in,
            t.3 + r.bytes_in,
        )
    })
}

/// A two-hour session swept every 10 s: a first record at `long_running`, then a continuation
/// every `long_running` with what it moved since and one with the rest when its entry goes;
/// together they hold the flow's counters exactly.
#[test]
fn a_long_flow_gives_a_continuation_every_long_running_and_the_rest_at_its_end() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&opened(443, S, false), dev(), CLOCK, &mut out);
    let mut ct = HashMap::new();
    let mut last = counters(S, 1, 0, 0);
    for s in (10..=7200).step_by(10) {
        // 7 packets out and 3 back every 10 s (counters() makes the bytes).
        last = counters(s * S, 7 * s / 10, 3 * s / 10, TCP_SYN | 0x10);
        ct.insert(key(443), last);
        t.sweep(s * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    }
    ct.remove(&key(443));
    t.sweep(7201 * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(t.len(), 0);
    // At 60 s, then every 60 s to 7200 s: 120 records; the end adds nothing new here.
    assert_eq!(out.len(), 120, "{:#?}", &out[..3]);
    assert!(!out[0].continuation);
    assert!(out[1..].iter().all(|r| r.continuation));
    assert_eq!(t.stats.observed, 1);
    assert_eq!(t.stats.continued, 119);
    // Each continuation starts where the record before it stopped.
    for w in out.windows(2) {
        assert_eq!(w[1].first_seen_ns, w[0].last_seen_ns);
    }
    assert_eq!(
        totals(&out),
        (
            last.packets_fwd,
            last.bytes_fwd,
            last.packets_rev,
            last.bytes_rev
        )
    );
    assert_eq!(out[5].packets_out, 42, "60 s of 7 packets every 10 s");
}

/// A flow's end takes what the flow cache holds of it unsynced (the last second of a burst).
#[test]
fn a_finishing_flow_takes_what_the_flow_cache_holds_unsynced() {
    struct Cache<'a>(&'a HashMap<CtKey, FlowCounters>, Unsynced);
    impl Counters for Cache<'_> {
        fn entry(&mut self, key: &CtKey) -> Option<FlowCounters> {
            self.0.get(key).copied()
        }
        fn unsynced(&mut self, _key: &CtKey) -> Unsynced {
            self.1
        }
    }
    let tail = Unsynced {
        packets_fwd: 29_000,
        bytes_fwd: 2_900_000,
        packets_rev: 0,
        bytes_rev: 0,
    };
    let mut ct = HashMap::new();
    let mut o = opened(9, S, false);
    o.proto = 17;
    o.key.proto = 17;
    o.tcp_flags = 0;
    ct.insert(o.key, counters(S, 1000, 0, 0));
    // Finished at the stop: the first record with the entry and the cache's tail.
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&o, dev(), CLOCK, &mut out);
    t.finish_all(CLOCK, Cache(&ct, tail), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].packets_out, out[0].bytes_out), (30_000, 3_000_000));
    // Observed unanswered first, then idle past its timeout: the rest is a continuation.
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    t.open(&o, dev(), CLOCK, &mut out);
    t.sweep(2 * S + 1, CLOCK, Cache(&ct, tail), &mut out);
    assert_eq!(out.len(), 1);
    t.sweep(400 * S, CLOCK, Cache(&ct, tail), &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(out[1].continuation);
    assert_eq!(totals(&out).0, 30_000);
}

/// A UDP stream nobody answers (a flood to a closed port) is observed at the answer wait with
/// its first second; what it sends after goes to the detectors every `long_running` and at
/// the end, from where the last record stopped, so they see all its packets, as offline.
#[test]
fn a_stream_observed_early_feeds_what_it_sends_after_until_it_ends() {
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut out = Vec::new();
    let mut o = opened(9, S, false);
    o.proto = 17;
    o.key.proto = 17;
    o.tcp_flags = 0;
    t.open(&o, dev(), CLOCK, &mut out);
    let udp = |last, fwd| FlowCounters {
        tcp_flags_fwd: 0,
        ..counters(last, fwd, 0, 0)
    };
    let mut ct = HashMap::new();
    ct.insert(o.key, udp(2 * S, 3000));
    t.sweep(2 * S + 1, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1, "unanswered past the wait");
    assert_eq!(out[0].packets_out, 3000);
    // Still sending: not observed again at every sweep...
    ct.insert(o.key, udp(5 * S, 20_000));
    t.sweep(5 * S, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1);
    // ... but at the stop, the rest, from the first record's last packet.
    ct.insert(o.key, udp(6 * S, 30_000));
    t.finish_all(CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let r = &out[1];
    assert_eq!((r.packets_out, r.bytes_out), (27_000, 2_700_000));
    assert_eq!((r.first_seen_ns, r.last_seen_ns), (1_002 * S, 1_006 * S));
    assert!(r.continuation);
    assert_eq!(totals(&out).0, 30_000, "every packet, once");
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
        entries(|_| {
            lookups += 1;
            None
        }),
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
    t.sweep(2 * S, CLOCK, entries(|_| None), &mut out);
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
    t.sweep(S + S / 10, CLOCK, entries(|k| ct.get(k).copied()), &mut out);
    assert_eq!(out.len(), 1, "nothing finished yet");
    // By the stop the first flow ran on; the young one's entry is gone.
    ct.insert(key(53), counters(3 * S, 4, 4, TCP_SYN));
    ct.remove(&key(2575));
    let held = t.finish_all(CLOCK, entries(|k| ct.get(k).copied()), &mut out);
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
    t.sweep(100 * S, CLOCK, entries(|_| None), &mut out);
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
    t.sweep(
        3 * S,
        CLOCK,
        super::entries(|k| entries.get(k).copied()),
        &mut out,
    );
    t.sweep(4 * S, CLOCK, super::entries(|_| None), &mut out);
    let got: HashMap<(u8, u16), FlowOutcome> =
        out.iter().map(|r| ((r.proto, r.port), r.outcome)).collect();
    assert_eq!(got[&(6, 443)], FlowOutcome::Established);
    assert_eq!(got[&(6, 22)], FlowOutcome::Refused);
    assert_eq!(got[&(6, 23)], FlowOutcome::Unanswered);
    assert_eq!(got[&(17, 53)], FlowOutcome::Established);
    assert_eq!(got[&(17, 69)], FlowOutcome::Unanswered);
    assert_eq!(got.len(), 5, "{out:#?}");
}

/// One engine, live and offline: a two-hour session (a 1,440-byte segment out and an ACK back
/// every 10 s) recorded by this table (swept every 10 s against conntrack counters of the same
/// packets) and by replay's (`continue_every_ns` = `long_running`, over the frames) moves the
/// same bytes in the same clock hours, which is what `volume` counts. Each sweeps on its own
/// clock, so an hour's figure may differ by the one record that straddles its end.
#[test]
fn live_and_replay_spread_a_long_flow_over_the_same_hours() {
    use std::collections::BTreeMap;
    use wardgate_analysis::{Decoded, Devices, FlowTable, FlowTableConfig, LinkType, decode};
    const HOUR: u64 = 3600 * S;
    let t0 = 500_000 * HOUR + 30 * S;
    let (dev_mac, peer_mac) = ([2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 9]);
    // (time, from the device, frame)
    let mut frames: Vec<(u64, bool, Vec<u8>)> = Vec::new();
    let mut frame = |t: u64, out: bool, flags: &str, payload: &[u8]| {
        let (sm, dm, s, d, sp, dp) = if out {
            (
                dev_mac,
                peer_mac,
                [192, 0, 2, 10],
                [198, 51, 100, 10],
                40000,
                443,
            )
        } else {
            (
                peer_mac,
                dev_mac,
                [198, 51, 100, 10],
                [192, 0, 2, 10],
                443,
                40000,
            )
        };
        let mut b = etherparse::PacketBuilder::ethernet2(sm, dm)
            .ipv4(s, d, 64)
            .tcp(sp, dp, 1, 1000);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        frames.push((t, out, v));
    };
    frame(t0, true, "S", b"");
    frame(t0 + 1_000, false, "SA", b"");
    for i in 1..=720 {
        frame(t0 + i * 10 * S, true, "A", &[0; 1400]);
        frame(t0 + i * 10 * S + 1_000, false, "A", b"");
    }
    // Replay's records.
    let mut offline = FlowTable::new(
        FlowTableConfig {
            continue_every_ns: Some(LiveConfig::default().long_running_ns),
            ..FlowTableConfig::default()
        },
        Devices::discover(),
    );
    for (t, _, f) in &frames {
        if let Ok(Decoded::Ip(p)) = decode(LinkType::Ethernet, f, *t) {
            offline.add(&p);
        }
    }
    let (offline, _, _) = offline.finish_all();
    let offline: Vec<FlowRecord> = offline
        .into_iter()
        .filter(|r| r.device_addr.to_string() == "192.0.2.10")
        .collect();
    // This table's, its conntrack entry counting the same packets (IP lengths).
    let ip_len = |f: &[u8]| u64::from(u16::from_be_bytes([f[16], f[17]]));
    let ct_at = |t: u64| {
        let mut c = counters(t0, 0, 0, TCP_SYN | 0x10);
        (c.packets_rev, c.bytes_fwd, c.bytes_rev, c.idle_timeout_s) = (0, 0, 0, 3600);
        for (ts, out, f) in frames.iter().filter(|(ts, ..)| *ts <= t) {
            if *out {
                c.packets_fwd += 1;
                c.bytes_fwd += ip_len(f);
            } else {
                c.packets_rev += 1;
                c.bytes_rev += ip_len(f);
            }
            c.last_seen_ns = *ts;
        }
        c
    };
    let mut o = opened(443, t0, false);
    o.ip_len = ip_len(&frames[0].2) as u32;
    let mut t = LiveFlows::new(LiveConfig::default());
    let mut live = Vec::new();
    let clock = Clock::default();
    t.open(&o, dev(), clock, &mut live);
    for k in 0..=721 {
        let now = t0 + k * 10 * S + 5 * S;
        let c = ct_at(now);
        t.sweep(now, clock, entries(|_| Some(c)), &mut live);
    }
    t.sweep(t0 + 7300 * S, clock, entries(|_| None), &mut live);
    assert_eq!(t.len(), 0);
    // Bytes by the clock hour each record starts in, as volume counts them.
    let by_hour = |recs: &[FlowRecord]| {
        let mut h = BTreeMap::new();
        for r in recs {
            *h.entry(r.first_seen_ns / HOUR).or_insert(0) += r.bytes();
        }
        h
    };
    let (l, f) = (by_hour(&live), by_hour(&offline));
    eprintln!("bytes by hour: live {l:?}, replay {f:?}");
    assert_eq!(
        l.values().sum::<u64>(),
        f.values().sum::<u64>(),
        "every byte, once"
    );
    for h in l.keys().chain(f.keys()) {
        let (lb, fb) = (
            l.get(h).copied().unwrap_or(0),
            f.get(h).copied().unwrap_or(0),
        );
        assert!(
            lb.abs_diff(fb) <= 7 * 1480,
            "hour {h}: live {l:?}, replay {f:?}"
        );
    }
    // Two hours of about 530 kB each: not all in the first (replay's one record) nor only the
    // first minute (live's one snapshot).
    assert!(l.values().filter(|b| **b > 400_000).count() >= 2, "{l:?}");
}
