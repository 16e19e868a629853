//! A generated ward capture for `bench learn` (bench code: kept out of the product crates).
//!
//! 1,000 devices with medical OUIs behind one router MAC, over 26 hours so every hour of day has
//! traffic: NTP every ~1024 s, DNS lookups, a few pings to the gateway, and per device class TCP
//! sessions with handshakes, payload and FIN: patient monitors send HL7 over MLLP (2575), imaging
//! modalities open DICOM associations (104, A-ASSOCIATE-RQ then P-DATA), pumps talk HTTPS and
//! HL7, lab analyzers HL7 and DICOM. Day shift (07-19 h) is 2.5x busier than night. Seeded: the
//! same file every time.

use std::{io::Write, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::Context as _;
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

pub const DEVICES: u16 = 1000;
const SEED: u64 = 0x77a2_d6a7_e000_0011;
/// 2026-11-23 00:00:00 UTC.
const T0_NS: u64 = 1_795_392_000 * NS;
const NS: u64 = 1_000_000_000;
const SPAN_NS: u64 = 26 * 3600 * NS;

/// Medical OUIs from ../shared/fixtures/device-facts/medical_oui_curated.tsv.
const OUIS: [[u8; 3]; 12] = [
    [0x00, 0x09, 0xFB], // Philips Patient Monitoring
    [0x00, 0x0F, 0x14], // Mindray
    [0x00, 0x10, 0x5D], // Draeger Medical
    [0x00, 0x12, 0x21], // B.Braun
    [0x00, 0x13, 0x38], // Fresenius-Vial
    [0x00, 0x1A, 0x01], // Smiths Medical
    [0x00, 0x03, 0xB1], // ICU Medical
    [0x00, 0x18, 0x65], // Siemens Healthcare
    [0x00, 0x1D, 0x4A], // Carestream
    [0x00, 0x06, 0x6B], // Sysmex
    [0x00, 0x0E, 0x2F], // Roche Diagnostics
    [0x00, 0x1A, 0xFA], // Welch Allyn
];
/// The ward's router (locally administered): every server answers from it.
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const DNS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const NTP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 123);
const HL7_ENGINE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PACS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ntp,
    Dns,
    Ping,
    Hl7,
    Dicom,
    Https,
}

#[derive(Debug, Clone, Copy)]
pub struct Generated {
    pub packets: u64,
    pub bytes: u64,
    pub sessions: u64,
}

fn device_mac(i: u16) -> [u8; 6] {
    let o = OUIS[usize::from(i) % OUIS.len()];
    let [hi, lo] = i.to_be_bytes();
    [o[0], o[1], o[2], 0x40, hi, lo]
}

fn device_ip(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 1 + (i / 250) as u8, 2 + (i % 250) as u8)
}

/// Sessions per day (at day-shift rate) of each kind for device `i`'s class.
fn class_rates(i: u16) -> &'static [(Kind, f64)] {
    match i % 4 {
        0 => &[(Kind::Hl7, 110.0)],                     // patient monitor
        1 => &[(Kind::Dicom, 32.0)],                    // imaging modality
        2 => &[(Kind::Https, 55.0), (Kind::Hl7, 45.0)], // infusion pump
        _ => &[(Kind::Hl7, 60.0), (Kind::Dicom, 15.0)], // lab analyzer
    }
}

/// MSH-3 sending application by device class (see `class_rates`).
fn hl7_app(i: u16) -> &'static str {
    match i % 4 {
        0 => "MONITOR",
        2 => "PUMP",
        _ => "LAB",
    }
}

fn day_factor(ts_ns: u64) -> f64 {
    let hour = (ts_ns / NS / 3600) % 24;
    if (7..19).contains(&hour) { 1.0 } else { 0.4 }
}

/// Writes the capture of `devices` devices (the bench uses DEVICES) to `path` (classic pcap,
/// Ethernet, microsecond timestamps).
pub fn write(path: &Path, devices: u16) -> anyhow::Result<Generated> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut sessions: Vec<(u64, u16, Kind)> = Vec::new();
    for dev in 0..devices {
        // NTP: periodic, 1024 s with a little jitter.
        let mut t = rng.random_range(0..1024 * NS);
        while t < SPAN_NS {
            sessions.push((t, dev, Kind::Ntp));
            t += 1024 * NS + rng.random_range(0..2 * NS);
        }
        let mut rates = vec![(Kind::Dns, 30.0), (Kind::Ping, 8.0)];
        rates.extend_from_slice(class_rates(dev));
        for (kind, per_day) in rates {
            // Poisson arrivals at the day rate, thinned at night.
            let mean_gap = 86_400.0 / per_day;
            let mut t = 0f64;
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                t += -u.ln() * mean_gap;
                let ts = (t * NS as f64) as u64;
                if ts >= SPAN_NS {
                    break;
                }
                if rng.random_range(0.0..1.0) < day_factor(T0_NS + ts) {
                    sessions.push((ts, dev, kind));
                }
            }
        }
    }
    sessions.sort_unstable();

    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(std::io::BufWriter::with_capacity(1 << 20, file))
        .context("writing the pcap header")?;
    let mut out = Out {
        w: &mut w,
        last_ns: 0,
        packets: 0,
        bytes: 0,
        buf: Vec::with_capacity(2048),
    };
    for (n, &(ts, dev, kind)) in sessions.iter().enumerate() {
        let mut s = Session {
            rng: &mut rng,
            out: &mut out,
            t: T0_NS + ts,
            dev,
            n: n as u32,
        };
        match kind {
            Kind::Ntp => s.ntp(),
            Kind::Dns => s.dns(),
            Kind::Ping => s.ping(),
            Kind::Hl7 => s.hl7(),
            Kind::Dicom => s.dicom(),
            Kind::Https => s.https(),
        }
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let (packets, bytes) = (out.packets, out.bytes);
    w.into_writer().flush()?;
    Ok(Generated {
        packets,
        bytes,
        sessions: sessions.len() as u64,
    })
}

struct Out<'a> {
    w: &'a mut PcapWriter<std::io::BufWriter<std::fs::File>>,
    last_ns: u64,
    packets: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Out<'_> {
    /// Sessions rarely overlap; a packet never goes back in time (readers expect order).
    fn put(&mut self, ts_ns: u64) -> anyhow::Result<()> {
        let ts = ts_ns.max(self.last_ns + 1000);
        self.last_ns = ts;
        let len = self.buf.len() as u32;
        self.w
            .write_packet(&PcapPacket::new(Duration::from_nanos(ts), len, &self.buf))?;
        self.packets += 1;
        self.bytes += u64::from(len);
        Ok(())
    }
}

struct Session<'a, 'b> {
    rng: &'a mut StdRng,
    out: &'a mut Out<'b>,
    t: u64,
    dev: u16,
    n: u32,
}

/// One direction of a TCP connection: ports and next sequence numbers.
#[derive(Clone, Copy)]
struct Tcp {
    client: u16,
    server: u16,
    cseq: u32,
    sseq: u32,
    peer: Ipv4Addr,
}

impl Session<'_, '_> {
    fn step(&mut self) {
        self.t += self.rng.random_range(200_000..2_000_000);
    }

    fn ephemeral(&mut self) -> u16 {
        self.rng.random_range(49152..65535)
    }

    fn udp(
        &mut self,
        up: bool,
        peer: Ipv4Addr,
        ports: (u16, u16),
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let (dev_mac, dev_ip) = (device_mac(self.dev), device_ip(self.dev));
        let b = if up {
            PacketBuilder::ethernet2(dev_mac, ROUTER_MAC)
                .ipv4(dev_ip.octets(), peer.octets(), 64)
                .udp(ports.0, ports.1)
        } else {
            PacketBuilder::ethernet2(ROUTER_MAC, dev_mac)
                .ipv4(peer.octets(), dev_ip.octets(), 62)
                .udp(ports.1, ports.0)
        };
        self.out.buf.clear();
        b.write(&mut self.out.buf, payload)?;
        self.out.put(self.t)?;
        self.step();
        Ok(())
    }

    fn ntp(&mut self) -> anyhow::Result<()> {
        let mut req = [0u8; 48];
        req[0] = 0x23; // v4, client
        let mut resp = [0u8; 48];
        resp[0] = 0x24; // v4, server
        resp[1] = 2;
        self.udp(true, NTP, (123, 123), &req)?;
        self.udp(false, NTP, (123, 123), &resp)
    }

    fn dns(&mut self) -> anyhow::Result<()> {
        let names = [
            "pacs.ward.example",
            "hl7.ward.example",
            "update.vendor.example",
            "ntp.ward.example",
        ];
        let name = names[self.rng.random_range(0..names.len())];
        let id: u16 = self.rng.random();
        let mut q = Vec::with_capacity(64);
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend_from_slice(&[
            0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 20,
        ]);
        let port = self.ephemeral();
        self.udp(true, DNS, (port, 53), &q)?;
        self.udp(false, DNS, (port, 53), &r)
    }

    fn ping(&mut self) -> anyhow::Result<()> {
        let (dev_mac, dev_ip) = (device_mac(self.dev), device_ip(self.dev));
        let id = self.dev;
        let seq = self.n as u16;
        let payload = [0x61u8; 56];
        self.out.buf.clear();
        PacketBuilder::ethernet2(dev_mac, ROUTER_MAC)
            .ipv4(dev_ip.octets(), GATEWAY.octets(), 64)
            .icmpv4_echo_request(id, seq)
            .write(&mut self.out.buf, &payload)?;
        self.out.put(self.t)?;
        self.step();
        self.out.buf.clear();
        PacketBuilder::ethernet2(ROUTER_MAC, dev_mac)
            .ipv4(GATEWAY.octets(), dev_ip.octets(), 64)
            .icmpv4_echo_reply(id, seq)
            .write(&mut self.out.buf, &payload)?;
        self.out.put(self.t)?;
        self.step();
        Ok(())
    }

    /// One TCP segment; `flags` is a subset of "SAPF" (syn, ack, psh, fin).
    fn seg(&mut self, c: &mut Tcp, up: bool, flags: &str, payload: &[u8]) -> anyhow::Result<()> {
        let (dev_mac, dev_ip) = (device_mac(self.dev), device_ip(self.dev));
        let (seq, ack) = if up {
            (c.cseq, c.sseq)
        } else {
            (c.sseq, c.cseq)
        };
        let mut b = if up {
            PacketBuilder::ethernet2(dev_mac, ROUTER_MAC)
                .ipv4(dev_ip.octets(), c.peer.octets(), 64)
                .tcp(c.client, c.server, seq, 64240)
        } else {
            PacketBuilder::ethernet2(ROUTER_MAC, dev_mac)
                .ipv4(c.peer.octets(), dev_ip.octets(), 62)
                .tcp(c.server, c.client, seq, 65160)
        };
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(ack),
                'P' => b.psh(),
                'F' => b.fin(),
                _ => b,
            };
        }
        self.out.buf.clear();
        b.write(&mut self.out.buf, payload)?;
        self.out.put(self.t)?;
        self.step();
        let used = payload.len() as u32 + u32::from(flags.contains('S') || flags.contains('F'));
        if up {
            c.cseq = c.cseq.wrapping_add(used);
        } else {
            c.sseq = c.sseq.wrapping_add(used);
        }
        Ok(())
    }

    fn open(&mut self, peer: Ipv4Addr, server: u16) -> anyhow::Result<Tcp> {
        let mut c = Tcp {
            client: self.ephemeral(),
            server,
            cseq: self.rng.random(),
            sseq: self.rng.random(),
            peer,
        };
        self.seg(&mut c, true, "S", &[])?;
        self.seg(&mut c, false, "SA", &[])?;
        self.seg(&mut c, true, "A", &[])?;
        Ok(c)
    }

    fn close(&mut self, c: &mut Tcp) -> anyhow::Result<()> {
        self.seg(c, true, "FA", &[])?;
        self.seg(c, false, "FA", &[])?;
        self.seg(c, true, "A", &[])
    }

    fn hl7(&mut self) -> anyhow::Result<()> {
        let mut c = self.open(HL7_ENGINE, 2575)?;
        let id = format!("MSG{:08}", self.n);
        let msg = format!(
            "\x0bMSH|^~\\&|{app}{dev}|WARD3|HL7ENGINE|HOSP|20261123120000||ORU^R01|{id}|P|2.5\r\
             PID|||{dev}||DOE^JOHN\rOBR|1|||VITALS\rOBX|1|NM|8867-4^HR||{hr}|/min\r\
             OBX|2|NM|2708-6^SpO2||{spo2}|%\r\x1c\r",
            app = hl7_app(self.dev),
            dev = self.dev,
            hr = self.rng.random_range(55..110),
            spo2 = self.rng.random_range(92..100),
        );
        let ack = format!(
            "\x0bMSH|^~\\&|HL7ENGINE|HOSP|{}{}|WARD3|20261123120001||ACK^R01|A{id}|P|2.5\rMSA|AA|{id}\r\x1c\r",
            hl7_app(self.dev),
            self.dev
        );
        self.seg(&mut c, true, "PA", msg.as_bytes())?;
        self.seg(&mut c, false, "A", &[])?;
        self.seg(&mut c, false, "PA", ack.as_bytes())?;
        self.seg(&mut c, true, "A", &[])?;
        self.close(&mut c)
    }

    fn dicom(&mut self) -> anyhow::Result<()> {
        let mut c = self.open(PACS, 104)?;
        let rq = associate_rq(&format!("MOD{:04}", self.dev), "PACS");
        self.seg(&mut c, true, "PA", &rq)?;
        let mut ac = rq.clone();
        ac[0] = 0x02;
        self.seg(&mut c, false, "PA", &ac)?;
        // P-DATA-TF of an image, acknowledged every other segment.
        let segments = self.rng.random_range(8..24);
        let mut pdata = vec![0u8; 1400];
        pdata[0] = 0x04;
        pdata[2..6].copy_from_slice(&(1394u32).to_be_bytes());
        for k in 0..segments {
            self.rng.fill(&mut pdata[6..]);
            self.seg(&mut c, true, "A", &pdata)?;
            if k % 2 == 1 {
                self.seg(&mut c, false, "A", &[])?;
            }
        }
        self.seg(
            &mut c,
            false,
            "PA",
            &[0x04, 0, 0, 0, 0, 8, 0, 0, 0, 4, 1, 3, 0, 0],
        )?;
        self.seg(&mut c, true, "PA", &[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])?; // A-RELEASE-RQ
        self.seg(&mut c, false, "PA", &[0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0])?; // A-RELEASE-RP
        self.close(&mut c)
    }

    fn https(&mut self) -> anyhow::Result<()> {
        // Pumps are every 4th device: spread them over 8 vendor clouds.
        let peer = Ipv4Addr::new(203, 0, 113, 10 + (self.dev / 4 % 8) as u8);
        let mut c = self.open(peer, 443)?;
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x00, 0xfc, 0x01, 0x00, 0x00, 0xf8, 0x03, 0x03,
        ];
        hello.resize(257, 0);
        self.rng.fill(&mut hello[11..]);
        self.seg(&mut c, true, "PA", &hello)?;
        let mut server = vec![0x16, 0x03, 0x03, 0x05, 0x00];
        server.resize(1285, 0);
        self.rng.fill(&mut server[5..]);
        self.seg(&mut c, false, "PA", &server)?;
        let mut data = vec![0x17, 0x03, 0x03, 0x01, 0x00];
        data.resize(261, 0);
        for _ in 0..2 {
            self.rng.fill(&mut data[5..]);
            self.seg(&mut c, true, "PA", &data)?;
            self.seg(&mut c, false, "PA", &data)?;
        }
        self.seg(&mut c, true, "A", &[])?;
        self.close(&mut c)
    }
}

/// A DICOM A-ASSOCIATE-RQ PDU (PS3.8 9.3.2): CT image storage, implicit little endian.
fn associate_rq(calling: &str, called: &str) -> Vec<u8> {
    fn item(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, 0];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn ae(title: &str) -> [u8; 16] {
        let mut a = [b' '; 16];
        a[..title.len()].copy_from_slice(title.as_bytes());
        a
    }
    let mut body = vec![0x00, 0x01, 0, 0];
    body.extend_from_slice(&ae(called));
    body.extend_from_slice(&ae(calling));
    body.extend_from_slice(&[0; 32]);
    body.extend(item(0x10, b"1.2.840.10008.3.1.1.1"));
    let mut pc = vec![1, 0, 0, 0];
    pc.extend(item(0x30, b"1.2.840.10008.5.1.4.1.1.2"));
    pc.extend(item(0x40, b"1.2.840.10008.1.2"));
    body.extend(item(0x20, &pc));
    let mut user = item(0x51, &16384u32.to_be_bytes());
    user.extend(item(0x52, b"1.2.826.0.1.3680043.2.1143.107"));
    user.extend(item(0x55, b"WARDGEN_1"));
    body.extend(item(0x50, &user));
    let mut pdu = vec![0x01, 0];
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pdu.extend(body);
    pdu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ward_capture_is_the_same_every_time_and_about_a_thousand_packets_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
        let ga = write(&a, 40).unwrap();
        let gb = write(&b, 40).unwrap();
        // The bench's 1,000 devices then give more than a million packets (it checks too).
        assert!(ga.packets >= 40 * 1000, "{ga:?}");
        assert_eq!(ga.packets, gb.packets);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let rq = associate_rq("MOD0001", "PACS");
        assert_eq!(
            u32::from_be_bytes(rq[2..6].try_into().unwrap()) as usize + 6,
            rq.len()
        );
        assert_eq!(&rq[10..14], b"PACS");
        assert_eq!(&rq[26..33], b"MOD0001");
    }
}
