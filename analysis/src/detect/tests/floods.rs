//! Floods the window average alone would miss: a burst in one record, and an ICMP flood that is
//! the answer side of a record its victim opened.

use super::*;

/// A host the site does not list (general host limits), sending from 192.0.2.66.
fn attacker() -> DeviceRef {
    dev("attacker", "02:00:00:00:00:66")
}

fn udp_burst(d: &DeviceRef, packets: u64, over_ns: u64) -> FlowRecord {
    let mut r = opened(d, 0, proto::UDP, "255.255.255.255", 67, None);
    if d.name == "attacker" {
        r.device_addr = ip("192.0.2.66");
    }
    r.device_port = 68;
    r.packets_out = packets;
    r.last_seen_ns = over_ns;
    r
}

#[test]
fn a_burst_is_judged_on_its_own_rate_over_at_least_a_second() {
    // 10,000 datagrams at one instant: 10,000/s against the pump's 2,000/s (the window's
    // average would be 1,000/s).
    let f = by(
        &run(site(), &[udp_burst(&pump(), 10_000, 0)], &[]),
        "flood_udp",
    );
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].device.name, "pump-1");
    assert!(
        f[0].summary.contains("10000 udp packets/s"),
        "{}",
        f[0].summary
    );
    // A general host's limit is 10,000/s: the same burst reaches it, half of it does not.
    let host = attacker();
    assert_eq!(
        by(
            &run(site(), &[udp_burst(&host, 10_000, 0)], &[]),
            "flood_udp"
        )
        .len(),
        1
    );
    assert!(run(site(), &[udp_burst(&host, 5_000, 0)], &[]).is_empty());
    // 1,500 spread over 10 s (150/s), or even in one instant (1,500/s over the 1 s floor),
    // are no flood for the pump.
    assert!(run(site(), &[udp_burst(&pump(), 1_500, 10 * NS)], &[]).is_empty());
    assert!(run(site(), &[udp_burst(&pump(), 1_500, 0)], &[]).is_empty());
}

/// Live, the rest of a burst reaches the engine when its flow finishes, after flows that came
/// later: the burst's finding still names the peer it went to, as offline, where it came first.
#[test]
fn a_burst_names_its_own_peer_whatever_else_the_window_holds() {
    let mut dns = opened(&pump(), 2 * NS, proto::UDP, "198.51.100.53", 53, None);
    dns.packets_in = 1;
    let mut burst = udp_burst(&pump(), 30_000, NS / 10);
    burst.peer = ip("198.51.100.99");
    burst.port = 9;
    // Fed to the engine in the order given, as the live agent does (`run` sorts by time).
    let peer_of = |flows: &[FlowRecord]| -> Vec<Option<IpAddr>> {
        let cfg = DetectConfig::default();
        let mut e = Engine::new(
            baseline_free(&cfg),
            site(),
            Baselines::default(),
            cfg.aggregate,
        );
        for r in flows {
            e.observe(&Observation::Flow(r));
        }
        let mut p: Vec<_> = by(&e.findings(), "flood_udp")
            .iter()
            .map(|f| f.peer)
            .collect();
        p.sort();
        p
    };
    // Offline order, the burst first, and live order, the later lookup first: the same
    // findings, the burst about 198.51.100.99 and the window's average over both peers (no
    // peer named).
    let want = vec![None, Some(ip("198.51.100.99"))];
    assert_eq!(peer_of(&[burst.clone(), dns.clone()]), want);
    assert_eq!(peer_of(&[dns, burst]), want);
}

/// The victim's neighbour advertisement opened the ICMPv6 flow; the attacker's echo requests
/// are its answer side. Returns the victim's record and the attacker's.
fn flood_into_victims_flow(requests: u64, replies: u64) -> [FlowRecord; 2] {
    let mut victim = opened(&pump(), 0, proto::ICMPV6, "2001:db8::66", 0, None);
    victim.device_addr = ip("2001:db8::10");
    victim.icmp_type = Some(136);
    victim.packets_out = 1 + replies;
    victim.packets_in = requests;
    victim.last_seen_ns = 5 * NS;
    let mut attacker = victim.clone();
    attacker.device = self::attacker();
    attacker.direction = FlowDirection::Received;
    attacker.device_addr = ip("2001:db8::66");
    attacker.peer = ip("2001:db8::10");
    attacker.packets_out = requests;
    attacker.packets_in = 1 + replies;
    [victim, attacker]
}

#[test]
fn an_icmp_flood_on_the_answer_side_of_its_victims_flow_is_the_answerers() {
    // 30,000 echo requests in 5 s, answered 16 times.
    let f = by(
        &run(site(), &flood_into_victims_flow(30_000, 16), &[]),
        "flood_icmp",
    );
    let on = |name: &str| {
        f.iter()
            .find(|f| f.device.name == name)
            .unwrap_or_else(|| panic!("no flood on {name}: {f:#?}"))
    };
    // The attacker sent it (its own record, which the victim opened) ...
    let sent = on("attacker");
    assert!(sent.summary.contains("attacker sent"), "{}", sent.summary);
    assert_eq!(sent.peer, Some(ip("2001:db8::10")));
    // ... and the pump received it from the attacker.
    let received = on("pump-1");
    assert!(
        received.summary.contains("pump-1 received"),
        "{}",
        received.summary
    );
    assert_eq!(received.peer, Some(ip("2001:db8::66")));
    assert_eq!(f.len(), 2, "{f:#?}");
}

#[test]
fn echo_replies_to_a_flood_are_not_the_victims_flood() {
    // The attacker opened an echo flood and the pump answered every request: the pump received
    // a flood and sent none.
    let mut victim = opened(&pump(), 0, proto::ICMP, "192.0.2.66", 0, None);
    victim.direction = FlowDirection::Received;
    victim.icmp_type = Some(8);
    victim.packets_in = 30_000;
    victim.packets_out = 30_000;
    victim.last_seen_ns = 5 * NS;
    let f = by(&run(site(), &[victim], &[]), "flood_icmp");
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].summary.contains("pump-1 received"), "{}", f[0].summary);
}

#[test]
fn a_udp_download_the_device_asked_for_is_not_a_flood() {
    // One request, 100,000 datagrams back in 2 s (a file read, a stream): the answer side of
    // TCP and UDP does not count.
    let mut r = opened(&pump(), 0, proto::UDP, "198.51.100.40", 69, None);
    r.packets_in = 100_000;
    r.last_seen_ns = 2 * NS;
    assert!(run(site(), &[r], &[]).is_empty());
}
