//! Hardening, round 2: the attacks an enforced device on the device VLAN still had, each
//! through the real object. Every test here failed on the datapath before the change.

use super::*;

const MONITOR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
const QUARANTINED_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];

/// How far the datapath's coarse clock may run ahead of the test's (a tick at HZ=250 is
/// 4 ms; 10 ms allowed): the budget tests allow the refill of that much more time.
const COARSE_TICK_S: f64 = 0.010;

fn spoofers(dp: &mut Datapath) -> Vec<(EventKind, u32, [u8; 6])> {
    events(dp)
        .into_iter()
        .filter(|e| e.kind == EventKind::Spoof)
        .map(|e| (e.kind, e.device_id, e.src_mac))
        .collect()
}

#[test]
fn an_enforced_device_cannot_leave_from_a_learning_or_monitored_address() {
    let (_pin, mut dp) = datapath("borrow");
    // One-way exfiltration from the learner's (192.0.2.13) and the monitor's (192.0.2.11)
    // addresses, with the pump's own MAC: dropped, and blamed on the pump (device 1).
    for src in ["192.0.2.13:40000", "192.0.2.11:40000"] {
        let f = frame(PUMP_MAC, src, "203.0.113.99:4444", L4::Udp);
        expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropSpoof);
    }
    // Nor by TCP to a peer its own policy allows.
    let f = frame(PUMP_MAC, "192.0.2.13:40001", "198.51.100.10:104", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropSpoof);
    // Nor can traffic for a learner's address be delivered to the pump's MAC.
    let f = frame_to(
        GW_MAC,
        PUMP_MAC,
        "203.0.113.99:4444",
        "192.0.2.13:40000",
        L4::Udp,
    );
    expect(&mut dp, false, &f, TC_ACT_SHOT, Reason::DropSpoof);
    // The quarantined device cannot walk out on the monitor's address either.
    let f = frame(
        QUARANTINED_MAC,
        "192.0.2.11:40002",
        "203.0.113.99:4444",
        L4::Udp,
    );
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropSpoof);
    // A learner using the monitor's address is reported (as the learner), not dropped.
    let f = frame(
        LEARNER_MAC,
        "192.0.2.11:40003",
        "203.0.113.99:4444",
        L4::Udp,
    );
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassSpoofReported);
    // A learner using the enforced pump's address is dropped.
    let f = frame(
        LEARNER_MAC,
        "192.0.2.10:40004",
        "203.0.113.99:4444",
        L4::Udp,
    );
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropSpoof);
    // The pump's four are the pump's, then the quarantined device's and the learner's own.
    let blamed: Vec<_> = spoofers(&mut dp).into_iter().map(|s| s.1).collect();
    assert_eq!(blamed, vec![1, 1, 1, 1, 3, 4, 4]);
}

/// An ARP reply with hardware type `htype`: `sender_ip` is at `sender_mac`.
fn arp_htype(htype: u16, frame_mac: [u8; 6], sender_mac: [u8; 6], sender_ip: [u8; 4]) -> Vec<u8> {
    let mut f = arp(frame_mac, sender_mac, sender_ip);
    f[14..16].copy_from_slice(&htype.to_be_bytes());
    f
}

#[test]
fn arp_of_every_hardware_type_is_a_checked_claim() {
    let (_pin, mut dp) = datapath("arp-htype");
    let monitor_ip = [192, 0, 2, 11];
    for htype in [1u16, 6, 0, 0xffff] {
        // The pump claiming the monitor's address (Linux takes type 6 on Ethernet too).
        let poison = arp_htype(htype, PUMP_MAC, PUMP_MAC, monitor_ip);
        expect(&mut dp, true, &poison, TC_ACT_SHOT, Reason::DropSpoof);
        // Its own address is fine, whatever the type.
        let own = arp_htype(htype, PUMP_MAC, PUMP_MAC, [192, 0, 2, 10]);
        expect(&mut dp, true, &own, TC_ACT_OK, Reason::PassArp);
    }
    // ARP for another protocol or address size carries no claim we could check: it does not
    // leave a device; from the gateway it passes.
    let mut other = arp(PUMP_MAC, PUMP_MAC, monitor_ip);
    other[16..18].copy_from_slice(&[0x86, 0xdd]);
    expect(&mut dp, true, &other, TC_ACT_SHOT, Reason::DropMalformed);
    let mut wide = arp(PUMP_MAC, PUMP_MAC, monitor_ip);
    wide[18] = 8;
    expect(&mut dp, true, &wide, TC_ACT_SHOT, Reason::DropMalformed);
    expect(&mut dp, false, &other, TC_ACT_OK, Reason::PassArp);
    assert_eq!(spoofers(&mut dp), vec![(EventKind::Spoof, 1, PUMP_MAC); 4]);
}

/// A neighbour discovery message of type `ty` from `src_mac`: `fixed` is what follows the
/// 4-byte header (reserved/flags and addresses), then `options`.
fn nd(src_mac: [u8; 6], src: &str, ty: u8, fixed: &[u8], options: &[&[u8]]) -> Vec<u8> {
    let mut body = fixed[4..].to_vec();
    for o in options {
        body.extend_from_slice(o);
    }
    let rest = [fixed[0], fixed[1], fixed[2], fixed[3]];
    icmpv6(src_mac, src, "ff02::1", 255, ty, rest, &body)
}

/// A link-layer address option: type 1 (source) or 2 (target).
fn lla(ty: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![ty, 1];
    o.extend_from_slice(&mac);
    o
}

#[test]
fn every_link_layer_option_of_neighbour_discovery_is_the_senders() {
    let (_pin, mut dp) = datapath("nd-options");
    let mut na_fixed = vec![0x20, 0, 0, 0];
    na_fixed.extend_from_slice(&v6("2001:db8:1::10"));
    let nonce = [14u8, 1, 1, 2, 3, 4, 5, 6];
    let own = lla(2, PUMP_MAC);
    let evil = lla(2, EVIL_MAC);
    // The pump's own advertisement, with a nonce first: passes.
    let ok = nd(PUMP_MAC, "fe80::a", 136, &na_fixed, &[&nonce, &own]);
    expect(&mut dp, true, &ok, TC_ACT_OK, Reason::PassNeighbour);
    // First target option right, second another MAC's; or the bad one after a nonce.
    let second = nd(PUMP_MAC, "fe80::a", 136, &na_fixed, &[&own, &evil]);
    expect(&mut dp, true, &second, TC_ACT_SHOT, Reason::DropSpoof);
    let after_nonce = nd(PUMP_MAC, "fe80::a", 136, &na_fixed, &[&nonce, &evil]);
    expect(&mut dp, true, &after_nonce, TC_ACT_SHOT, Reason::DropSpoof);
    // A solicitation, a router solicitation and a redirect whose source option is another
    // MAC's: each points the gateway's cache elsewhere.
    let mut ns_fixed = vec![0u8; 4];
    ns_fixed.extend_from_slice(&v6("2001:db8:1::1"));
    let src_evil = lla(1, EVIL_MAC);
    let ns = nd(PUMP_MAC, "2001:db8:1::10", 135, &ns_fixed, &[&src_evil]);
    expect(&mut dp, true, &ns, TC_ACT_SHOT, Reason::DropSpoof);
    let rs = nd(PUMP_MAC, "fe80::a", 133, &[0; 4], &[&src_evil]);
    expect(&mut dp, true, &rs, TC_ACT_SHOT, Reason::DropSpoof);
    let mut redirect_fixed = vec![0u8; 4];
    redirect_fixed.extend_from_slice(&v6("fe80::a"));
    redirect_fixed.extend_from_slice(&v6("2001:db8:100::10"));
    let redirect = nd(PUMP_MAC, "fe80::a", 137, &redirect_fixed, &[&evil]);
    expect(&mut dp, true, &redirect, TC_ACT_SHOT, Reason::DropSpoof);
    // The same with the sender's own MAC pass.
    let ns = nd(
        PUMP_MAC,
        "2001:db8:1::10",
        135,
        &ns_fixed,
        &[&lla(1, PUMP_MAC)],
    );
    expect(&mut dp, true, &ns, TC_ACT_OK, Reason::PassNeighbour);
    // Malformed options are dropped, never passed unchecked: length 0, a link-layer option
    // longer than one Ethernet address, an option running past the message.
    let zero = [1u8, 0, 0, 0, 0, 0, 0, 0];
    let long = [1u8, 2, 2, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0];
    let past = [14u8, 4, 0, 0, 0, 0, 0, 0];
    for bad in [&zero[..], &long[..], &past[..]] {
        let f = nd(PUMP_MAC, "fe80::a", 136, &na_fixed, &[bad]);
        expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropMalformed);
    }
    // Too many options to read.
    let many: Vec<&[u8]> = vec![&nonce; 12];
    let f = nd(PUMP_MAC, "fe80::a", 136, &na_fixed, &many);
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropMalformed);
    let blamed: Vec<_> = spoofers(&mut dp).into_iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(blamed, vec![(1, PUMP_MAC); 5]);
}

#[test]
fn ipv6_link_local_from_a_known_mac_is_that_device() {
    let (_pin, mut dp) = datapath("link-local");
    // The gateway's own SSH over fe80:: is not in the pump's policy: dropped as the pump's.
    let f = frame(PUMP_MAC, "[fe80::a]:40100", "[fe80::1]:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropPolicy);
    let f = frame(QUARANTINED_MAC, "[fe80::c]:40101", "[fe80::1]:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropQuarantine);
    // A learner is that learner: passed, tracked, reported as its new flow.
    let f = frame(LEARNER_MAC, "[fe80::d]:40102", "[fe80::1]:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassLearn);
    let evs: Vec<_> = events(&mut dp)
        .into_iter()
        .map(|e| (e.kind, e.device_id))
        .collect();
    assert_eq!(
        evs,
        vec![
            (EventKind::Deny, 1),
            (EventKind::Deny, 3),
            (EventKind::NewFlow, 4)
        ]
    );
    // An unknown MAC on fe80:: still follows the gateway default.
    let f = frame(EVIL_MAC, "[fe80::e]:40103", "[fe80::1]:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassUnknownDevice);
}

#[test]
fn management_is_one_way_and_counts_against_the_budget() {
    let (_pin, mut dp) = datapath("mgmt-oneway");
    // Devices toward the management host's SSH: not opened by the allowlist.
    let f = frame(
        QUARANTINED_MAC,
        "192.0.2.12:40007",
        "203.0.113.1:22",
        L4::Syn,
    );
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropQuarantine);
    let f = frame(PUMP_MAC, "192.0.2.10:40008", "203.0.113.1:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_SHOT, Reason::DropPolicy);
    let f = frame(MONITOR_MAC, "192.0.2.11:40009", "203.0.113.1:22", L4::Syn);
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassMonitorWouldDeny);
    // The management host opening flows to the pump: within the pump's flow budget only.
    let mut devices = reference_devices();
    devices[0].max_flows = 2;
    dp.apply(&state_with(2, devices, reference_rules()))
        .unwrap();
    for i in 0..3u16 {
        let f = frame(
            GW_MAC,
            &format!("203.0.113.1:{}", 50000 + i),
            "192.0.2.10:22",
            L4::Syn,
        );
        let (verdict, reason) = if i < 2 {
            (TC_ACT_OK, Reason::PassMgmt)
        } else {
            (TC_ACT_SHOT, Reason::DropFlowCap)
        };
        expect(&mut dp, false, &f, verdict, reason);
    }
}

#[test]
fn the_flow_cap_counts_live_flows_not_how_fast_they_come() {
    let (_pin, mut dp) = datapath("flowcap-live");
    let mut devices = reference_devices();
    devices[0].max_flows = 4;
    dp.apply(&state_with(2, devices, reference_rules()))
        .unwrap();
    let syn = |port: u16| {
        frame(
            PUMP_MAC,
            &format!("192.0.2.10:{port}"),
            "198.51.100.10:104",
            L4::Syn,
        )
    };
    let fin = |port: u16| {
        frame(
            PUMP_MAC,
            &format!("192.0.2.10:{port}"),
            "198.51.100.10:104",
            L4::Fin,
        )
    };
    // Forty short connections, never more than two at once: none is refused.
    for i in 0..40u16 {
        let port = 42000 + i;
        expect(&mut dp, true, &syn(port), TC_ACT_OK, Reason::PassPolicy);
        if i >= 1 {
            expect(
                &mut dp,
                true,
                &fin(port - 1),
                TC_ACT_OK,
                Reason::PassEstablished,
            );
        }
    }
    // One is still open: three more fit, the fifth live one does not.
    for port in 43000..43003u16 {
        expect(&mut dp, true, &syn(port), TC_ACT_OK, Reason::PassPolicy);
    }
    expect(&mut dp, true, &syn(43003), TC_ACT_SHOT, Reason::DropFlowCap);
    assert!(dp.flow_counts().unwrap().contains(&(1, 4)));
    // The recount finds the four live entries (closed ones hold no place) and changes nothing.
    let recount = dp.recount_flows().unwrap();
    assert_eq!(
        dp.flow_counts().unwrap().iter().find(|c| c.0 == 1),
        Some(&(1, 4)),
        "{recount:?}"
    );
}

#[test]
fn idled_out_flows_give_their_place_back_at_the_recount() {
    let (_pin, mut dp) = datapath("flowcap-idle");
    let mut devices = reference_devices();
    devices[0].max_flows = 2;
    let mut rules = reference_rules();
    for r in &mut rules {
        r.idle_timeout_s = 1;
    }
    dp.apply(&state_with(2, devices, rules)).unwrap();
    // UDP flows (DNS) only ever idle out.
    let dns = |port: u16| {
        frame(
            PUMP_MAC,
            &format!("192.0.2.10:{port}"),
            "198.51.100.53:53",
            L4::Udp,
        )
    };
    expect(&mut dp, true, &dns(44000), TC_ACT_OK, Reason::PassPolicy);
    expect(&mut dp, true, &dns(44001), TC_ACT_OK, Reason::PassPolicy);
    expect(&mut dp, true, &dns(44002), TC_ACT_SHOT, Reason::DropFlowCap);
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    let recount = dp.recount_flows().unwrap();
    assert_eq!(recount.changed, 1, "{recount:?}");
    assert_eq!(
        dp.flow_counts().unwrap().iter().find(|c| c.0 == 1),
        Some(&(1, 0))
    );
    expect(&mut dp, true, &dns(44003), TC_ACT_OK, Reason::PassPolicy);
}

#[test]
fn application_identity_needs_a_handshake_and_a_spent_bucket_spends_nothing() {
    let (_pin, mut dp) = datapath("pay-handshake");
    let mut rules = reference_rules();
    rules[0].inspect = true; // the pump's DICOM rule to the PACS carries an app constraint
    dp.replace(&state_with(2, reference_devices(), rules))
        .unwrap();
    let pacs = "198.51.100.10:104";
    let assoc = filled(0x01, 80);
    // One-way: the pump's SYN and then data, no answer from the PACS: nothing handed over.
    let dev = "192.0.2.10:40400";
    expect(
        &mut dp,
        true,
        &frame(PUMP_MAC, dev, pacs, L4::Syn),
        TC_ACT_OK,
        Reason::PassPolicy,
    );
    for seq in [1u32, 81] {
        let f = data_frame(PUMP_MAC, GW_MAC, dev, pacs, seq, &assoc);
        expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassEstablished);
    }
    // With the handshake, but bytes far past the SYN's sequence number: not the flow's first.
    let dev2 = "192.0.2.10:40401";
    expect(
        &mut dp,
        true,
        &frame(PUMP_MAC, dev2, pacs, L4::Syn),
        TC_ACT_OK,
        Reason::PassPolicy,
    );
    let answer = syn_ack_frame(GW_MAC, PUMP_MAC, pacs, dev2, 9000);
    expect(&mut dp, false, &answer, TC_ACT_OK, Reason::PassReply);
    let far = data_frame(PUMP_MAC, GW_MAC, dev2, pacs, 1_000_000, &assoc);
    expect(&mut dp, true, &far, TC_ACT_OK, Reason::PassEstablished);
    // The flow's first bytes after the handshake are handed over, and the refusals above spent
    // none of its budget.
    let first = data_frame(PUMP_MAC, GW_MAC, dev2, pacs, 1, &assoc);
    expect(&mut dp, true, &first, TC_ACT_OK, Reason::PassEstablished);
    let segs = payload_records(&mut dp);
    let got: Vec<_> = segs.iter().map(|s| (s.forward, s.seq)).collect();
    assert_eq!(got, vec![(true, 1)], "{segs:?}");
    assert_eq!(u16::from_be_bytes(segs[0].key.a_port_be), 40401);
    let v = conntrack_values(&mut dp)
        .into_iter()
        .find(|v| v.rule_id == 1001 && v.isn_rev == 9000)
        .expect("the handshaken flow's entry");
    assert_eq!(
        (v.inspect_fwd, v.inspect_rev),
        (
            wardgate_common::INSPECT_PACKETS - 1,
            wardgate_common::INSPECT_PACKETS
        ),
        "only the record sent spent the budget"
    );
}

#[test]
fn the_per_device_payload_bucket_bounds_one_device_and_costs_its_flows_nothing() {
    let (_pin, mut dp) = datapath("pay-bucket");
    let mut rules = reference_rules();
    rules[0].inspect = true;
    dp.replace(&state_with(2, reference_devices(), rules))
        .unwrap();
    let pacs = "198.51.100.10:104";
    let burst = wardgate_common::PAYLOAD_DEVICE_BURST as u16;
    // More inspected flows than the device's burst, each with one first segment, at once (the
    // bucket refills at its rate while the test runs: that much more may pass).
    let started = std::time::Instant::now();
    for i in 0..burst + 8 {
        let dev = format!("192.0.2.10:{}", 41000 + i);
        expect(
            &mut dp,
            true,
            &frame(PUMP_MAC, &dev, pacs, L4::Syn),
            TC_ACT_OK,
            Reason::PassPolicy,
        );
        let answer = syn_ack_frame(GW_MAC, PUMP_MAC, pacs, &dev, 100);
        expect(&mut dp, false, &answer, TC_ACT_OK, Reason::PassReply);
        let data = data_frame(PUMP_MAC, GW_MAC, &dev, pacs, 1, &filled(2, 40));
        expect(&mut dp, true, &data, TC_ACT_OK, Reason::PassEstablished);
    }
    let refill = (started.elapsed().as_secs_f64() + COARSE_TICK_S)
        * wardgate_common::PAYLOAD_DEVICE_RATE_PER_S as f64;
    let segs = payload_records(&mut dp);
    assert!(
        segs.len() >= usize::from(burst)
            && segs.len() <= usize::from(burst) + refill.ceil() as usize,
        "the device's burst and its refill ({refill:.1}), no more: {}",
        segs.len()
    );
    assert!(
        segs.len() < usize::from(burst) + 8,
        "some were refused: {}",
        segs.len()
    );
    // The flows the bucket refused kept their budget.
    let refused = conntrack_values(&mut dp)
        .into_iter()
        .filter(|v| v.rule_id == 1001 && v.inspect_fwd == wardgate_common::INSPECT_PACKETS)
        .count();
    assert_eq!(refused, usize::from(burst) + 8 - segs.len());
}

#[test]
fn untracked_flows_are_sampled_and_counted_and_records_have_a_per_device_budget() {
    let (_pin, mut dp) = datapath("records-budget");
    let mut devices = reference_devices();
    devices[3].max_flows = 3; // the learner
    dp.apply(&state_with(2, devices, reference_rules()))
        .unwrap();
    // The learner over its cap: 3 tracked, 33 untracked of which the 1st, 17th and 33rd are
    // recorded (flagged untracked), all 33 counted.
    for i in 0..36u16 {
        let f = frame(
            LEARNER_MAC,
            &format!("192.0.2.13:{}", 30000 + i),
            "203.0.113.80:445",
            L4::Syn,
        );
        let reason = if i < 3 {
            Reason::PassLearn
        } else {
            Reason::PassUntracked
        };
        expect(&mut dp, true, &f, TC_ACT_OK, reason);
    }
    let recs = flow_records(&mut dp);
    let ports: Vec<u16> = recs.iter().map(|r| r.device_port).collect();
    assert_eq!(ports, vec![30000, 30001, 30002, 30003, 30019, 30035]);
    assert_eq!(recs.iter().filter(|r| r.untracked).count(), 3, "{recs:?}");
    assert!(
        dp.device_budgets()
            .unwrap()
            .iter()
            .any(|b| b.device_id == 4 && b.untracked == 33)
    );
}

#[test]
fn one_device_cannot_fill_the_flow_record_ring() {
    let (_pin, mut dp) = datapath("records-flood");
    let mut devices = reference_devices();
    devices[3].max_flows = 100_000;
    dp.apply(&state_with(2, devices, reference_rules()))
        .unwrap();
    let burst = wardgate_common::RECORD_BURST as u32;
    // A scan from the learner: more new flows at once than its share of the ring.
    let n = burst + 2_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let dst = format!("203.0.113.{}:{}", 1 + i % 250, 1000 + i / 250);
        let f = frame(LEARNER_MAC, "192.0.2.13:30000", &dst, L4::Syn);
        run(&mut dp, true, &f);
    }
    // The bucket refills at its rate while the frames run (slower on a loaded machine).
    // Read on the datapath's coarse clock, which can run a tick ahead of ours.
    let refill = ((started.elapsed().as_secs_f64() + COARSE_TICK_S)
        * wardgate_common::RECORD_RATE_PER_S as f64)
        .ceil() as u32;
    // The monitor's flow right after is still recorded.
    let f = frame(
        MONITOR_MAC,
        "192.0.2.11:30001",
        "198.51.100.10:104",
        L4::Syn,
    );
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassPolicy);
    let recs = flow_records(&mut dp);
    let learner = recs.iter().filter(|r| r.device_id == 4).count() as u32;
    assert!(
        learner >= burst && learner <= burst + refill && learner < n,
        "the learner's records are its burst and what refilled meanwhile ({refill}): {learner}"
    );
    assert_eq!(recs.iter().filter(|r| r.device_id == 2).count(), 1);
    let b = dp
        .device_budgets()
        .unwrap()
        .into_iter()
        .find(|b| b.device_id == 4)
        .unwrap();
    assert_eq!(b.rec_lost, n - learner, "every refused record is counted");
}

#[test]
fn unknown_hosts_each_have_their_own_event_budget() {
    let (_pin, mut dp) = datapath("unknown-budget");
    // Unknown host A floods (the test budget: 50 at once), then unknown host B's first packet.
    for i in 0..80u16 {
        let f = frame(
            [2, 0, 0, 0, 0, 0x91],
            &format!("192.0.2.91:{}", 20000 + i),
            "198.51.100.10:104",
            L4::Syn,
        );
        run(&mut dp, true, &f);
    }
    let f = frame(
        [2, 0, 0, 0, 0, 0x92],
        "192.0.2.92:20000",
        "198.51.100.10:104",
        L4::Syn,
    );
    expect(&mut dp, true, &f, TC_ACT_OK, Reason::PassUnknownDevice);
    let evs = events(&mut dp);
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        evs.iter()
            .filter(|e| e.kind == EventKind::UnknownDevice && e.src == ip)
            .count()
    };
    assert!(
        from("192.0.2.91") <= 51,
        "A is bounded: {}",
        from("192.0.2.91")
    );
    assert_eq!(from("192.0.2.92"), 1, "B is reported");
}
