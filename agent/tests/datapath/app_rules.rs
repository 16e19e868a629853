//! Application rules (issue 21, points 3 and 4): DICOM AE titles and HL7 MSH fields decided by
//! the datapath at a flow's first payload segment, through the real object. A refused flow's
//! segment comes back as a RST|ACK toward its sender (TC_ACT_REDIRECT), is counted under
//! `DropAppRefused` and by why, and reported with the fields read. Every test here failed on
//! the datapath before the change (the app constraint was not enforced: everything passed).

use aya::TestRun as _;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use wardgate_policy::desired::AppRule;

use super::*;

const TC_ACT_REDIRECT: u32 = 7;
const DEV: &str = "192.0.2.10:40500";
const PACS: &str = "198.51.100.10:104";
const PACS6: &str = "[2001:db8:100::10]:104";
const DEV6: &str = "[2001:db8:1::10]:40500";
/// The HL7 engine that opens flows to the pump (rule 1004, to-device).
const ENGINE: &str = "198.51.100.20:40600";
const PUMP_HL7: &str = "192.0.2.10:2575";

/// The reference policy, with the DICOM rules (1001 v4, 1006 v6) allowing calling AE
/// MODALITY1 (or CT_1) to call PACS, and the HL7 rule (1004) allowing PUMP_APP at WARD3 to send
/// ORU^R01 or ADT^A01.
fn app_datapath(tag: &str) -> (PinRoot, Datapath) {
    isolate();
    let (pin, mut dp) = datapath(tag);
    dp.replace(&state_with(2, reference_devices(), app_rules()))
        .unwrap();
    (pin, dp)
}

fn app_rules() -> Vec<wardgate_policy::desired::Rule> {
    let mut rules = reference_rules();
    for r in &mut rules {
        match r.rule_id {
            1001 | 1006 => {
                r.inspect = true;
                r.app = Some(AppRule::Dicom {
                    calling_ae: vec!["CT_1".into(), "MODALITY1".into()],
                    called_ae: vec!["PACS".into()],
                });
            }
            1004 => {
                r.inspect = true;
                r.app = Some(AppRule::Hl7 {
                    sending_application: vec!["PUMP_APP".into()],
                    sending_facility: vec!["WARD3".into()],
                    receiving_application: Vec::new(),
                    message_type: vec!["ADT^A01".into(), "ORU^R01".into()],
                });
            }
            _ => {}
        }
    }
    rules
}

/// This test thread in a network namespace of its own (its loopback down): a refusal sends
/// the server's reset as a clone out of the run's device, which under BPF_PROG_TEST_RUN is
/// the thread's namespace's loopback. There it goes nowhere.
fn isolate() {
    // Safety: unshare of the calling thread's network namespace; no pointers.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET)"
    );
}

/// An A-ASSOCIATE-RQ's first bytes: PDU header, version, called and calling AE titles
/// (space padded), the reserved 32 bytes, and an application context item.
fn associate_rq(calling: &str, called: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00, 0x00];
    let ae = |s: &str| {
        let mut a = [b' '; 16];
        a[..s.len()].copy_from_slice(s.as_bytes());
        a
    };
    body.extend(ae(called));
    body.extend(ae(calling));
    body.extend([0u8; 32]);
    let ctx = b"1.2.840.10008.3.1.1.1";
    body.extend([0x10, 0x00, 0x00, ctx.len() as u8]);
    body.extend(ctx);
    let mut pdu = vec![0x01, 0x00];
    pdu.extend((body.len() as u32).to_be_bytes());
    pdu.extend(body);
    pdu
}

/// An MLLP-framed HL7 message.
fn mllp(msh3: &str, msh4: &str, msh9: &str) -> Vec<u8> {
    let mut m = vec![0x0b];
    m.extend(
        format!(
            "MSH|^~\\&|{msh3}|{msh4}|EHR|HOSP|20261206101500||{msh9}|MSG0001|P|2.5\r\
             PID|1||12345^^^HOSP||DOE^JANE\r"
        )
        .as_bytes(),
    );
    m.extend([0x1c, 0x0d]);
    m
}

/// SYN from `client`, SYN-ACK (ISN 4999) from `server`, the client's ACK: the handshake.
/// `from_device`: the client is the device (ingress), else the server is.
fn handshake(dp: &mut Datapath, client: &str, server: &str, from_device: bool) {
    let (cmac, smac) = if from_device {
        (PUMP_MAC, GW_MAC)
    } else {
        (GW_MAC, PUMP_MAC)
    };
    let syn = frame_to(cmac, smac, client, server, L4::Syn);
    expect(dp, from_device, &syn, TC_ACT_OK, Reason::PassPolicy);
    let syn_ack = syn_ack_frame(smac, cmac, server, client, 4999);
    expect(dp, !from_device, &syn_ack, TC_ACT_OK, Reason::PassReply);
    let ack = data_frame(cmac, smac, client, server, 1, &[]);
    expect(dp, from_device, &ack, TC_ACT_OK, Reason::PassEstablished);
}

/// Runs `frame` and returns the verdict and the frame as the program left it.
fn run_out(dp: &mut Datapath, from_device: bool, frame: &[u8]) -> (u32, Vec<u8>) {
    let name = if from_device {
        wardgate_common::program_names::INGRESS
    } else {
        wardgate_common::program_names::EGRESS
    };
    let prog = dp.classifier(name).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(aya::TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// Runs `frame`, expecting it refused: the verdict is a redirect, `DropAppRefused` the one
/// counter that moved; returns the frame sent back.
#[track_caller]
fn expect_reset(dp: &mut Datapath, from_device: bool, frame: &[u8]) -> Vec<u8> {
    let before = dp.stats().unwrap();
    let (verdict, out) = run_out(dp, from_device, frame);
    let moved = delta(&before, &dp.stats().unwrap());
    assert_eq!(
        (verdict, moved),
        (TC_ACT_REDIRECT, vec![(Reason::DropAppRefused, 1)]),
        "a refused segment is turned around, counted once"
    );
    out
}

/// The reset `out` must be for the segment `sent` (payload `len` bytes, seq `seq`, ack 1):
/// addresses, ports and MACs swapped, RST|ACK, seq = the segment's ack, ack = its end, no
/// payload, valid checksums.
#[track_caller]
fn check_reset(sent: &[u8], out: &[u8], seq: u32, len: u32) {
    let s = SlicedPacket::from_ethernet(sent).unwrap();
    let o = SlicedPacket::from_ethernet(out).expect("the reset parses");
    let (Some(etherparse::LinkSlice::Ethernet2(se)), Some(etherparse::LinkSlice::Ethernet2(oe))) =
        (&s.link, &o.link)
    else {
        panic!("ethernet")
    };
    assert_eq!(
        (oe.source(), oe.destination()),
        (se.destination(), se.source())
    );
    let (Some(TransportSlice::Tcp(st)), Some(TransportSlice::Tcp(ot))) =
        (&s.transport, &o.transport)
    else {
        panic!("tcp")
    };
    assert_eq!(
        (ot.source_port(), ot.destination_port()),
        (st.destination_port(), st.source_port())
    );
    assert!(ot.rst() && ot.ack() && !ot.syn() && !ot.fin() && !ot.psh());
    assert_eq!(ot.sequence_number(), 1, "the segment's ack");
    assert_eq!(
        ot.acknowledgment_number(),
        seq + len,
        "everything it carried"
    );
    assert!(ot.payload().is_empty(), "the payload is cut");
    let header = ot.to_header();
    match (&s.net, &o.net) {
        (Some(NetSlice::Ipv4(si)), Some(NetSlice::Ipv4(oi))) => {
            let (sh, oh) = (si.header(), oi.header());
            assert_eq!(
                (oh.source(), oh.destination()),
                (sh.destination(), sh.source())
            );
            assert_eq!(oh.total_len(), 40);
            let ip = oh.to_header();
            assert_eq!(
                ip.calc_header_checksum(),
                ip.header_checksum,
                "IPv4 header checksum"
            );
            assert_eq!(
                header.calc_checksum_ipv4(&ip, &[]).unwrap(),
                header.checksum,
                "TCP checksum"
            );
            assert_eq!(out.len(), 14 + 40, "nothing after the headers");
        }
        (Some(NetSlice::Ipv6(si)), Some(NetSlice::Ipv6(oi))) => {
            let (sh, oh) = (si.header(), oi.header());
            assert_eq!(
                (oh.source(), oh.destination()),
                (sh.destination(), sh.source())
            );
            assert_eq!(oh.payload_length(), 20);
            assert_eq!(
                header.calc_checksum_ipv6(&oh.to_header(), &[]).unwrap(),
                header.checksum,
                "TCP checksum"
            );
        }
        _ => panic!("same IP version both ways"),
    }
}

fn app_events(dp: &mut Datapath) -> Vec<DatapathEvent> {
    events(dp)
        .into_iter()
        .filter(|e| e.kind == EventKind::AppRefused)
        .collect()
}

#[test]
fn an_association_with_an_unlisted_calling_ae_is_reset_and_a_listed_one_passes_onto_the_cache() {
    pin_to_one_cpu();
    let (_pin, mut dp) = app_datapath("app-dicom");
    // Refused: WRONG is not a calling AE of rule 1001.
    handshake(&mut dp, DEV, PACS, true);
    let rq = associate_rq("WRONG", "PACS");
    let seg = data_frame(PUMP_MAC, GW_MAC, DEV, PACS, 1, &rq);
    let out = expect_reset(&mut dp, true, &seg);
    check_reset(&seg, &out, 1, rq.len() as u32);
    // The client sends it again: the same answer; the server's packets are dropped; a RST
    // from the client passes (the flow is over).
    let out = expect_reset(&mut dp, true, &seg);
    check_reset(&seg, &out, 1, rq.len() as u32);
    let back = data_frame(GW_MAC, PUMP_MAC, PACS, DEV, 5000, b"x");
    expect(&mut dp, false, &back, TC_ACT_SHOT, Reason::DropAppRefused);
    assert_eq!(dp.app_refused().unwrap()["calling_ae"], 1, "one refusal");

    // Allowed: MODALITY1 calling PACS, from another port.
    let dev2 = "192.0.2.10:40501";
    handshake(&mut dp, dev2, PACS, true);
    let rq = associate_rq("MODALITY1", "PACS");
    let seg = data_frame(PUMP_MAC, GW_MAC, dev2, PACS, 1, &rq);
    expect(&mut dp, true, &seg, TC_ACT_OK, Reason::PassEstablished);
    // The A-ASSOCIATE-AC back, and the association's data.
    let ac = data_frame(GW_MAC, PUMP_MAC, PACS, dev2, 5000, &[0x02; 80]);
    expect(&mut dp, false, &ac, TC_ACT_OK, Reason::PassReply);
    let rsp = data_frame(GW_MAC, PUMP_MAC, PACS, dev2, 5080, &[0x04; 40]);
    expect(&mut dp, false, &rsp, TC_ACT_OK, Reason::PassReply);
    let mut seq = 1 + rq.len() as u32;
    for _ in 0..3 {
        let d = data_frame(PUMP_MAC, GW_MAC, dev2, PACS, seq, &[0x04; 200]);
        expect(&mut dp, true, &d, TC_ACT_OK, Reason::PassEstablished);
        seq += 200;
    }
    let entry = |dp: &mut Datapath| {
        conntrack_values(dp)
            .into_iter()
            .find(|v| v.rule_id == 1001 && v.flags & wardgate_common::CT_APP_REFUSED == 0)
            .expect("the allowed flow's entry")
    };
    let v = entry(&mut dp);
    assert_eq!(v.flags & wardgate_common::APP_PENDING, 0, "checked");
    assert_eq!((v.inspect_fwd, v.inspect_rev), (0, 0), "budget spent");
    // From now on the flow cache answers: conntrack counts the one packet that filled the
    // slot, not the ones the slot answered (folded in once a second).
    let counted = v.packets_fwd;
    for _ in 0..5 {
        let d = data_frame(PUMP_MAC, GW_MAC, dev2, PACS, seq, &[0x04; 200]);
        expect(&mut dp, true, &d, TC_ACT_OK, Reason::PassEstablished);
        seq += 200;
    }
    assert!(
        entry(&mut dp).packets_fwd <= counted + 1,
        "later packets are flow-cache hits"
    );

    // One event, with both AE titles.
    let evs = app_events(&mut dp);
    assert_eq!(evs.len(), 1, "{evs:?}");
    let e = &evs[0];
    assert_eq!(e.reason, Some(Reason::DropAppRefused));
    assert_eq!(
        (e.device_id, e.rule_id, e.dport, e.from_device),
        (1, 1001, 104, true)
    );
    let app = e.app.as_ref().expect("the fields read");
    assert_eq!((app.why, app.app), ("calling_ae", "dicom"));
    assert_eq!(app.fields, ["WRONG", "PACS"]);
}

#[test]
fn an_unlisted_called_ae_over_ipv6_is_reset_with_valid_checksums() {
    let (_pin, mut dp) = app_datapath("app-dicom6");
    handshake(&mut dp, DEV6, PACS6, true);
    let rq = associate_rq("CT_1", "ARCHIVE");
    let seg = data_frame(PUMP_MAC, GW_MAC, DEV6, PACS6, 1, &rq);
    let out = expect_reset(&mut dp, true, &seg);
    check_reset(&seg, &out, 1, rq.len() as u32);
    assert_eq!(dp.app_refused().unwrap()["called_ae"], 1);
    // The listed pair passes.
    let dev = "[2001:db8:1::10]:40501";
    handshake(&mut dp, dev, PACS6, true);
    let seg = data_frame(
        PUMP_MAC,
        GW_MAC,
        dev,
        PACS6,
        1,
        &associate_rq("CT_1", "PACS"),
    );
    expect(&mut dp, true, &seg, TC_ACT_OK, Reason::PassEstablished);
}

#[test]
fn an_hl7_first_message_from_an_unlisted_sender_is_reset_toward_the_engine() {
    let (_pin, mut dp) = app_datapath("app-hl7");
    // Rule 1004 is to-device: the engine opens the flow to the pump's MLLP port; its segment
    // is seen at egress and its reset goes back in at the interface's ingress.
    handshake(&mut dp, ENGINE, PUMP_HL7, false);
    let msg = mllp("ROGUE_APP", "WARD3", "ORU^R01");
    let seg = data_frame(GW_MAC, PUMP_MAC, ENGINE, PUMP_HL7, 1, &msg);
    let out = expect_reset(&mut dp, false, &seg);
    check_reset(&seg, &out, 1, msg.len() as u32);
    // Right application, wrong facility; right both, a message type not listed.
    let cases = [
        (40601, mllp("PUMP_APP", "WARD9", "ORU^R01"), "msh4"),
        (40602, mllp("PUMP_APP", "WARD3", "ADT^A08^ADT_A01"), "msh9"),
    ];
    for (port, msg, _) in &cases {
        let engine = format!("198.51.100.20:{port}");
        handshake(&mut dp, &engine, PUMP_HL7, false);
        let seg = data_frame(GW_MAC, PUMP_MAC, &engine, PUMP_HL7, 1, msg);
        expect_reset(&mut dp, false, &seg);
    }
    // The listed sender passes, with a three-component MSH-9 (its first two compared).
    let engine = "198.51.100.20:40603";
    handshake(&mut dp, engine, PUMP_HL7, false);
    let ok = mllp("PUMP_APP", "WARD3", "ORU^R01^ORU_R01");
    let seg = data_frame(GW_MAC, PUMP_MAC, engine, PUMP_HL7, 1, &ok);
    expect(&mut dp, false, &seg, TC_ACT_OK, Reason::PassEstablished);
    let ack = data_frame(
        PUMP_MAC,
        GW_MAC,
        PUMP_HL7,
        engine,
        5000,
        b"\x0bMSH|^~\\&|ACK\r",
    );
    expect(&mut dp, true, &ack, TC_ACT_OK, Reason::PassReply);

    let refused = dp.app_refused().unwrap();
    assert_eq!(
        (refused["msh3"], refused["msh4"], refused["msh9"]),
        (1, 1, 1)
    );
    let evs = app_events(&mut dp);
    assert_eq!(evs.len(), 3, "{evs:?}");
    let app = evs[0].app.as_ref().unwrap();
    assert_eq!((app.why, app.app), ("msh3", "hl7"));
    assert_eq!(app.fields, ["ROGUE_APP", "WARD3", "EHR", "ORU^R01"]);
    assert!(
        !evs[0].from_device,
        "opened by the engine, toward the device"
    );
}

/// Malformed and short first segments are refused when the rule checks fields (never
/// passed unchecked, never a crash), deterministically: the same input, the same verdict.
#[test]
fn malformed_or_short_first_segments_are_refused_deterministically() {
    let (_pin, mut dp) = app_datapath("app-malformed");
    let mut port = 41000u16;
    let mut refuse = |dp: &mut Datapath, payload: &[u8], why: &str| {
        port += 1;
        let dev = format!("192.0.2.10:{port}");
        handshake(dp, &dev, PACS, true);
        let seg = data_frame(PUMP_MAC, GW_MAC, &dev, PACS, 1, payload);
        let before = dp.app_refused().unwrap()[why];
        let out = expect_reset(dp, true, &seg);
        check_reset(&seg, &out, 1, payload.len() as u32);
        assert_eq!(
            dp.app_refused().unwrap()[why],
            before + 1,
            "refused as {why}"
        );
    };
    let rq = associate_rq("MODALITY1", "PACS");
    // Shorter than the two AE titles.
    refuse(&mut dp, &rq[..41], "dicom_malformed");
    refuse(&mut dp, &[0x01], "dicom_malformed");
    // Not an A-ASSOCIATE-RQ (a P-DATA-TF with the same bytes after its type).
    let mut pdata = rq.clone();
    pdata[0] = 0x04;
    refuse(&mut dp, &pdata, "dicom_malformed");
    // NUL padding reads as space padding: allowed (checked on a fresh flow below).
    let mut nul = rq.clone();
    for b in &mut nul[26 + 9..42] {
        *b = 0;
    }

    // HL7 to the pump: no MLLP start, no MSH, a field that does not end in the scanned bytes.
    let mut engine_port = 41500u16;
    let mut refuse_hl7 = |dp: &mut Datapath, payload: &[u8], why: &str| {
        engine_port += 1;
        let engine = format!("198.51.100.20:{engine_port}");
        handshake(dp, &engine, PUMP_HL7, false);
        let seg = data_frame(GW_MAC, PUMP_MAC, &engine, PUMP_HL7, 1, payload);
        let before = dp.app_refused().unwrap()[why];
        let out = expect_reset(dp, false, &seg);
        check_reset(&seg, &out, 1, payload.len() as u32);
        assert_eq!(
            dp.app_refused().unwrap()[why],
            before + 1,
            "refused as {why}"
        );
    };
    let good = mllp("PUMP_APP", "WARD3", "ORU^R01");
    refuse_hl7(&mut dp, &good[1..], "hl7_malformed");
    refuse_hl7(&mut dp, b"\x0bPID|1|", "hl7_malformed");
    refuse_hl7(&mut dp, b"\x0b", "hl7_malformed");
    refuse_hl7(&mut dp, &good[..20], "hl7_malformed");
    let long = format!("PUMP_APP|WARD3|{}", "X".repeat(300));
    refuse_hl7(&mut dp, &mllp(&long, "WARD3", "ORU^R01"), "hl7_malformed");
    // A listed value's prefix, or a value longer than any key: no match.
    refuse_hl7(&mut dp, &mllp("PUMP_AP", "WARD3", "ORU^R01"), "msh3");
    refuse_hl7(&mut dp, &mllp(&"P".repeat(40), "WARD3", "ORU^R01"), "msh3");

    // Payload on an entry that saw no handshake (picked up mid-stream): refused unverified.
    let dev = "192.0.2.10:41900";
    let seg = data_frame(PUMP_MAC, GW_MAC, dev, PACS, 1, &rq);
    let before = dp.stats().unwrap();
    let (verdict, _) = run_out(&mut dp, true, &seg);
    let moved = delta(&before, &dp.stats().unwrap());
    assert_eq!(
        (verdict, moved),
        (TC_ACT_REDIRECT, vec![(Reason::DropAppRefused, 1)])
    );
    assert_eq!(dp.app_refused().unwrap()["unverified"], 1);

    // A segment past the first bytes (they were lost) is dropped, not decided; the first
    // bytes when they come are checked.
    let dev = "192.0.2.10:41901";
    handshake(&mut dp, dev, PACS, true);
    let later = data_frame(
        PUMP_MAC,
        GW_MAC,
        dev,
        PACS,
        1 + rq.len() as u32,
        &[0x04; 100],
    );
    expect(&mut dp, true, &later, TC_ACT_SHOT, Reason::DropAppRefused);
    let first = data_frame(PUMP_MAC, GW_MAC, dev, PACS, 1, &nul);
    expect(&mut dp, true, &first, TC_ACT_OK, Reason::PassEstablished);
    expect(&mut dp, true, &later, TC_ACT_OK, Reason::PassEstablished);

    // Data on a SYN (TCP Fast Open) would reach the server unchecked: dropped.
    let mut tfo = Vec::new();
    etherparse::PacketBuilder::ethernet2(PUMP_MAC, GW_MAC)
        .ipv4([192, 0, 2, 10], [198, 51, 100, 10], 64)
        .tcp(41950, 104, 0, 1000)
        .syn()
        .write(&mut tfo, &rq)
        .unwrap();
    expect(&mut dp, true, &tfo, TC_ACT_SHOT, Reason::DropAppRefused);

    // Arbitrary first segments never crash and are decided the same way twice.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..64u16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 600) as usize;
        let mut payload: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
        if i % 2 == 0 {
            payload[0] = 0x01;
        }
        let mut verdicts = Vec::new();
        for round in 0..2u16 {
            let dev = format!("192.0.2.10:{}", 42000 + i * 2 + round);
            handshake(&mut dp, &dev, PACS, true);
            let seg = data_frame(PUMP_MAC, GW_MAC, &dev, PACS, 1, &payload);
            verdicts.push(run_out(&mut dp, true, &seg).0);
        }
        assert_eq!(verdicts[0], verdicts[1], "deterministic");
        assert_eq!(
            verdicts[0], TC_ACT_REDIRECT,
            "random bytes name no listed AE"
        );
    }
}

/// A monitored device's flows are only reported: the check counts and reports, the flow
/// passes.
#[test]
fn a_monitored_devices_unlisted_association_passes_and_is_reported() {
    isolate();
    let (_pin, mut dp) = datapath("app-monitor");
    let mut devices = reference_devices();
    for d in &mut devices {
        if d.device_id == 1 {
            d.mode = Mode::Monitor;
        }
    }
    dp.replace(&state_with(2, devices, app_rules())).unwrap();
    handshake(&mut dp, DEV, PACS, true);
    let seg = data_frame(
        PUMP_MAC,
        GW_MAC,
        DEV,
        PACS,
        1,
        &associate_rq("WRONG", "PACS"),
    );
    expect(&mut dp, true, &seg, TC_ACT_OK, Reason::PassEstablished);
    assert_eq!(dp.app_refused().unwrap()["calling_ae"], 1);
    let evs = app_events(&mut dp);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].reason, Some(Reason::PassMonitorWouldDeny));
}

/// A SYN reopening the tuple of a checked association is a new association: checked again
/// (before, the entry answered as the checked flow going on, and the new request passed).
#[test]
fn a_syn_reopening_a_checked_tuple_is_checked_again() {
    pin_to_one_cpu();
    let (_pin, mut dp) = app_datapath("app-reopen");
    let dev = "192.0.2.10:40700";
    handshake(&mut dp, dev, PACS, true);
    let rq = associate_rq("MODALITY1", "PACS");
    let seg = data_frame(PUMP_MAC, GW_MAC, dev, PACS, 1, &rq);
    expect(&mut dp, true, &seg, TC_ACT_OK, Reason::PassEstablished);
    // The association goes on until its payload budget is spent and the flow cache answers.
    let mut seq = 1 + rq.len() as u32;
    for k in 0..3u32 {
        let back = data_frame(GW_MAC, PUMP_MAC, PACS, dev, 5000 + k * 10, &[2; 10]);
        expect(&mut dp, false, &back, TC_ACT_OK, Reason::PassReply);
        let d = data_frame(PUMP_MAC, GW_MAC, dev, PACS, seq, &[4; 100]);
        expect(&mut dp, true, &d, TC_ACT_OK, Reason::PassEstablished);
        seq += 100;
    }
    // Same tuple, a new handshake (its data would meet the old connection's cache slot on
    // this CPU), another calling AE.
    handshake(&mut dp, dev, PACS, true);
    let rq = associate_rq("WRONG", "PACS");
    let seg = data_frame(PUMP_MAC, GW_MAC, dev, PACS, 1, &rq);
    let out = expect_reset(&mut dp, true, &seg);
    check_reset(&seg, &out, 1, rq.len() as u32);
}
