use etherparse::PacketBuilder;

use super::*;
use crate::{
    decode::{Decoded, LinkType, decode},
    device::Devices,
};

const DEV: [u8; 6] = [0x00, 0x03, 0xb1, 0, 0, 1];
const PACS: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

struct Frames(Vec<(u64, Vec<u8>)>);

impl Frames {
    fn tcp(&mut self, t: u64, from_dev: bool, seq: u32, flags: &str, payload: &[u8]) {
        let (sm, dm, s, d, sp, dp) = if from_dev {
            (DEV, PACS, [192, 0, 2, 10], [198, 51, 100, 5], 40000, 104)
        } else {
            (PACS, DEV, [198, 51, 100, 5], [192, 0, 2, 10], 104, 40000)
        };
        let mut b = PacketBuilder::ethernet2(sm, dm)
            .ipv4(s, d, 64)
            .tcp(sp, dp, seq, 1000);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(1);
        }
        if flags.contains('R') {
            b = b.rst();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        self.0.push((t, out));
    }

    fn run(&self) -> (Vec<FlowRecord>, crate::flow::TableStats) {
        self.run_with(FlowTableConfig::default())
    }

    fn run_with(&self, cfg: FlowTableConfig) -> (Vec<FlowRecord>, crate::flow::TableStats) {
        let mut t = FlowTable::new(cfg, Devices::discover());
        for (ts, f) in &self.0 {
            if let Decoded::Ip(p) = decode(LinkType::Ethernet, f, *ts).unwrap() {
                t.add(&p);
            }
        }
        let (r, _, s) = t.finish_all();
        (r, s)
    }
}

/// A two-hour session, a segment each way every 10 s: one record by default; with
/// `continue_every_ns` (replay, as live) a record at 60 s, then a continuation of what it moved
/// since about every 60 s and the rest at its end, adding up to the same counters.
#[test]
fn a_long_flow_gives_continuations_when_asked_and_they_add_up() {
    const S: u64 = 1_000_000_000;
    let mut f = Frames(Vec::new());
    f.tcp(S, true, 99, "S", b"");
    f.tcp(S + 1000, false, 499, "SA", b"");
    for i in 1..=720u64 {
        f.tcp(S + i * 10 * S, true, 100, "A", &[0; 100]);
        f.tcp(S + i * 10 * S + 1000, false, 500, "A", b"");
    }
    let opened = |recs: &[FlowRecord]| -> Vec<FlowRecord> {
        recs.iter()
            .filter(|r| r.direction == FlowDirection::Opened)
            .cloned()
            .collect()
    };
    let (whole, _) = f.run();
    let whole = opened(&whole);
    assert_eq!(whole.len(), 1);
    let cfg = FlowTableConfig {
        continue_every_ns: Some(60 * S),
        ..FlowTableConfig::default()
    };
    let (recs, stats) = f.run_with(cfg);
    assert_eq!(stats.flows, 1);
    let recs = opened(&recs);
    assert!(!recs[0].continuation);
    assert!(recs[1..].iter().all(|r| r.continuation));
    // Sweeps come every 5 s of capture time: a record every 60 to 65 s over two hours.
    assert!((110..=121).contains(&recs.len()), "{}", recs.len());
    for w in recs.windows(2) {
        assert_eq!(w[1].first_seen_ns, w[0].last_seen_ns);
    }
    let sum = |f: fn(&FlowRecord) -> u64| recs.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.packets_out), whole[0].packets_out);
    assert_eq!(sum(|r| r.bytes_out), whole[0].bytes_out);
    assert_eq!(sum(|r| r.packets_in), whole[0].packets_in);
    assert_eq!(sum(|r| r.bytes_in), whole[0].bytes_in);
}

#[test]
fn a_dicom_association_gives_one_record_per_device_end() {
    let pdu = crate::dicom::tests::associate_rq("CT1", "PACS", &["1.2.840.10008.1.1"]);
    let mut f = Frames(Vec::new());
    f.tcp(1_000, true, 99, "S", b"");
    f.tcp(2_000, false, 499, "SA", b"");
    f.tcp(3_000, true, 100, "A", b"");
    // The PDU in two segments, the second one retransmitted.
    f.tcp(4_000, true, 100, "A", &pdu[..50]);
    f.tcp(5_000, true, 150, "A", &pdu[50..]);
    f.tcp(5_500, true, 150, "A", &pdu[50..]);
    f.tcp(6_000, false, 500, "A", b"\x02\x00");
    f.tcp(7_000, true, 150 + pdu.len() as u32 - 50, "FA", b"");
    f.tcp(8_000, false, 502, "FA", b"");
    let (recs, stats) = f.run();
    assert_eq!(stats.flows, 1);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let ct = recs
        .iter()
        .find(|r| r.direction == FlowDirection::Opened)
        .unwrap();
    assert_eq!(ct.device.name, "ICUMedic-00:03:b1:00:00:01");
    assert_eq!(
        (ct.peer.to_string().as_str(), ct.port, ct.proto),
        ("198.51.100.5", 104, 6)
    );
    assert_eq!((ct.packets_out, ct.packets_in), (6, 3));
    assert_eq!((ct.first_seen_ns, ct.last_seen_ns), (1_000, 8_000));
    assert_eq!(ct.tcp, Some(TcpOutcome::Established));
    match ct.app.as_ref().unwrap() {
        crate::AppIdentity::Dicom(rq) => {
            assert_eq!(
                (rq.calling_ae.as_str(), rq.called_ae.as_str()),
                ("CT1", "PACS")
            );
            assert!(!rq.truncated);
        }
        other => panic!("{other:?}"),
    }
    let pacs = recs
        .iter()
        .find(|r| r.direction == FlowDirection::Received)
        .unwrap();
    assert_eq!(pacs.device.name, "dev-02:00:00:00:00:02");
    assert_eq!(
        (pacs.port, pacs.device_port, pacs.bytes_in),
        (104, 104, ct.bytes_out)
    );
}

#[test]
fn handshake_outcomes() {
    let mut refused = Frames(Vec::new());
    refused.tcp(1, true, 1, "S", b"");
    refused.tcp(2, false, 0, "RA", b"");
    let (r, _) = refused.run();
    assert_eq!(r[0].tcp, Some(TcpOutcome::Refused));

    let mut silent = Frames(Vec::new());
    silent.tcp(1, true, 1, "S", b"");
    silent.tcp(1_000_000_000, true, 1, "S", b"");
    let (r, _) = silent.run();
    assert_eq!(r.len(), 1, "only the device that sent is known");
    assert_eq!(
        (r[0].tcp, r[0].packets_out),
        (Some(TcpOutcome::NoAnswer), 2)
    );

    // Seen mid-stream from the server's side first: the lower port is still the server.
    let mut mid = Frames(Vec::new());
    mid.tcp(1, false, 1, "A", b"x");
    mid.tcp(2, true, 1, "A", b"y");
    let (r, _) = mid.run();
    let ct = r
        .iter()
        .find(|r| r.device.mac == Some(crate::Mac(DEV)))
        .unwrap();
    assert_eq!((ct.direction, ct.port), (FlowDirection::Opened, 104));
    assert_eq!(ct.tcp, Some(TcpOutcome::Established));
}

#[test]
fn a_new_syn_after_close_or_idle_is_a_new_flow() {
    let mut f = Frames(Vec::new());
    f.tcp(1, true, 1, "S", b"");
    f.tcp(2, false, 0, "RA", b"");
    f.tcp(3, true, 1, "S", b"");
    f.tcp(4, false, 0, "SA", b"");
    // Idle past the TCP timeout (1 hour).
    f.tcp(4 + 3601 * 1_000_000_000, true, 5, "A", b"z");
    let (_, stats) = f.run();
    assert_eq!(stats.flows, 3);
}

/// A completed TCP flow `device` opened to `peer` port 443 at `first_ns` (other modules' tests).
pub(crate) fn record_to(device: IpAddr, peer: IpAddr, first_ns: u64) -> FlowRecord {
    FlowRecord {
        device: DeviceRef {
            name: "dev".into(),
            id: None,
            mac: None,
        },
        direction: FlowDirection::Opened,
        device_addr: device,
        device_port: 40000,
        peer,
        peer_port: 443,
        proto: 6,
        port: 443,
        icmp_type: None,
        vlan: None,
        packets_out: 3,
        bytes_out: 300,
        packets_in: 3,
        bytes_in: 900,
        first_seen_ns: first_ns,
        last_seen_ns: first_ns + 1_000,
        tcp: Some(TcpOutcome::Established),
        outcome: FlowOutcome::Established,
        rule: None,
        app: None,
        tcp_flags: None,
        peer_name: None,
        continuation: false,
    }
}
