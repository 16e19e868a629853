//! Captures the eval generates (deterministic, documentation addresses only): a pump's ordinary
//! day, the same day with a beacon, a UDP flood, ARP replies claiming the pump's address, and a
//! telnet sweep. Frames are built with etherparse and written with pcap-file.

use std::{path::Path, time::Duration};

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};

pub const PUMP_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
pub const PUMP: [u8; 4] = [192, 0, 2, 10];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
const ATTACKER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xee];
const NS: u64 = 1_000_000_000;
pub const DAY: u64 = 86_400 * NS;
/// 2026-01-05 00:00:00 UTC: capture clocks start here.
pub const T0: u64 = 1_767_571_200 * NS;

/// The site the generated captures are read with.
pub const SITE: &str = "# The eval's generated captures: one infusion pump behind gw-eval.
site: eval
groups:
  infusion-server: [198.51.100.30/32]
  dns: [198.51.100.53/32]
  ntp: [198.51.100.123/32]
devices:
  - name: pump-eval
    mac: 02:00:00:00:00:0a
    addresses: [192.0.2.10]
    profile: infusion-pump
    gateway: gw-eval
    location: Ward 3A, bed 12
    asset_id: BME-EVAL
";

/// A TCP connection's peer and ports.
#[derive(Clone, Copy)]
pub struct Tuple {
    peer: [u8; 4],
    pump_port: u16,
    port: u16,
}

#[derive(Default)]
pub struct Frames(Vec<(u64, Vec<u8>)>);

impl Frames {
    fn eth(&mut self, t: u64, from_pump: bool, build: impl FnOnce(PacketBuilderStep) -> Vec<u8>) {
        let (s, d) = if from_pump {
            (PUMP_MAC, GW_MAC)
        } else {
            (GW_MAC, PUMP_MAC)
        };
        self.0.push((t, build(PacketBuilder::ethernet2(s, d))));
    }

    /// A UDP exchange: a datagram from the pump and, if `reply`, one back. To port 53 they are
    /// a real DNS query for the pump's server and its answer (replay reads DNS messages), else
    /// `len` filler bytes.
    pub fn udp(&mut self, t: u64, peer: [u8; 4], sport: u16, dport: u16, len: usize, reply: bool) {
        let (ask, answer) = if dport == 53 {
            dns_exchange(sport)
        } else {
            (vec![0x55; len], vec![0x66; len])
        };
        self.eth(t, true, |b| {
            let mut out = Vec::new();
            b.ipv4(PUMP, peer, 64)
                .udp(sport, dport)
                .write(&mut out, &ask)
                .expect("udp frame");
            out
        });
        if reply {
            self.eth(t + NS / 100, false, |b| {
                let mut out = Vec::new();
                b.ipv4(peer, PUMP, 64)
                    .udp(dport, sport)
                    .write(&mut out, &answer)
                    .expect("udp frame");
                out
            });
        }
    }

    fn tcp(&mut self, t: u64, from_pump: bool, c: Tuple, flags: &str, seq: u32, data: &[u8]) {
        let Tuple {
            peer,
            pump_port,
            port,
        } = c;
        self.eth(t, from_pump, |b| {
            let (src, dst, sp, dpp) = if from_pump {
                (PUMP, peer, pump_port, port)
            } else {
                (peer, PUMP, port, pump_port)
            };
            let mut tb = b.ipv4(src, dst, 64).tcp(sp, dpp, seq, 65535);
            for c in flags.chars() {
                tb = match c {
                    'S' => tb.syn(),
                    'A' => tb.ack(1),
                    'F' => tb.fin(),
                    'R' => tb.rst(),
                    'P' => tb.psh(),
                    _ => tb,
                };
            }
            let mut out = Vec::new();
            tb.write(&mut out, data).expect("tcp frame");
            out
        });
    }

    /// A whole TCP connection from the pump: handshake, `up` bytes up, `down` bytes down, FINs.
    pub fn tcp_conn(
        &mut self,
        t: u64,
        peer: [u8; 4],
        sport: u16,
        port: u16,
        up: usize,
        down: usize,
    ) {
        let ms = NS / 1000;
        let c = Tuple {
            peer,
            pump_port: sport,
            port,
        };
        self.tcp(t, true, c, "S", 1000, &[]);
        self.tcp(t + ms, false, c, "SA", 5000, &[]);
        self.tcp(t + 2 * ms, true, c, "A", 1001, &[]);
        self.tcp(t + 3 * ms, true, c, "AP", 1001, &vec![0x16; up]);
        self.tcp(t + 4 * ms, false, c, "AP", 5001, &vec![0x17; down]);
        self.tcp(t + 5 * ms, true, c, "AF", 1001 + up as u32, &[]);
        self.tcp(t + 6 * ms, false, c, "AF", 5001 + down as u32, &[]);
    }

    /// A SYN from the pump nobody answers.
    pub fn syn(&mut self, t: u64, peer: [u8; 4], sport: u16, port: u16) {
        let c = Tuple {
            peer,
            pump_port: sport,
            port,
        };
        self.tcp(t, true, c, "S", 1000, &[]);
    }

    /// An ARP reply from `mac` claiming `ip`.
    pub fn arp_reply(&mut self, t: u64, mac: [u8; 6], ip: [u8; 4]) {
        let mut f = Vec::new();
        f.extend_from_slice(&GW_MAC);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&GW_MAC);
        f.extend_from_slice(&[192, 0, 2, 1]);
        self.0.push((t, f));
    }

    pub fn write(mut self, path: &Path) -> anyhow::Result<()> {
        self.0.sort_by_key(|(t, _)| *t);
        let file = std::fs::File::create(path)?;
        let mut w = PcapWriter::new(std::io::BufWriter::new(file))?;
        for (t, f) in &self.0 {
            w.write_packet(&PcapPacket::new(
                Duration::from_nanos(*t),
                f.len() as u32,
                f,
            ))?;
        }
        Ok(())
    }
}

type PacketBuilderStep = etherparse::PacketBuilderStep<etherparse::Ethernet2Header>;

/// The pump's ordinary traffic from `start` for `minutes`: every minute a drug-library check
/// over HTTPS, a DNS lookup and an NTP poll; volumes vary a little by hour.
pub fn ordinary(f: &mut Frames, start: u64, minutes: u64) {
    for m in 0..minutes {
        let t = start + m * 60 * NS + (m * 7919 % 5) * NS;
        let sport = 30000 + (m % 30000) as u16;
        f.tcp_conn(
            t,
            [198, 51, 100, 30],
            sport,
            443,
            300 + (m % 13) as usize * 10,
            900,
        );
        f.udp(t + NS, [198, 51, 100, 53], sport, 53, 40, true);
        f.udp(t + 2 * NS, [198, 51, 100, 123], 123, 123, 48, true);
    }
}

pub struct Case {
    pub name: &'static str,
    /// Files under the eval directory.
    pub file: &'static str,
    /// Learned first (baselines), if any.
    pub learn: Option<&'static str>,
    pub benign: bool,
    pub expected: &'static [&'static str],
}

pub const CASES: &[Case] = &[
    Case {
        name: "gen: ordinary day (after a learned day)",
        file: "ordinary-day.pcap",
        learn: Some("learn-day.pcap"),
        benign: true,
        expected: &[],
    },
    Case {
        name: "gen: beacon 60 s +-3 s to 203.0.113.66",
        file: "beacon.pcap",
        learn: Some("learn-day.pcap"),
        benign: false,
        expected: &["beacon", "new_peer"],
    },
    Case {
        name: "gen: UDP flood from the pump",
        file: "udp-flood.pcap",
        learn: None,
        benign: false,
        expected: &["flood_udp"],
    },
    Case {
        name: "gen: ARP replies claiming the pump's address",
        file: "arp-spoof.pcap",
        learn: None,
        benign: false,
        expected: &["spoof"],
    },
    Case {
        name: "gen: telnet sweep of 30 hosts from the pump",
        file: "telnet-sweep.pcap",
        learn: None,
        benign: false,
        expected: &["class_protocol", "fanout", "scan_horizontal", "scan_trw"],
    },
];

/// Writes every generated capture into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("site.yaml"), SITE)?;
    let mut f = Frames::default();
    ordinary(&mut f, T0, 24 * 60);
    f.write(&dir.join("learn-day.pcap"))?;
    let mut f = Frames::default();
    ordinary(&mut f, T0 + DAY, 24 * 60);
    f.write(&dir.join("ordinary-day.pcap"))?;
    // Eight hours of the ordinary day with a beacon every 60 s +- 3 s, 300-310 bytes up (a
    // beacon's duration score needs calls in at least 6 hourly bins, as RITA's does).
    let mut f = Frames::default();
    ordinary(&mut f, T0 + DAY, 480);
    for i in 0..480u64 {
        let jitter_ms = (i * 7919 % 6001) as i64 - 3000;
        let t = (T0 + DAY + 30 * NS + i * 60 * NS) as i64 + jitter_ms * 1_000_000;
        f.tcp_conn(
            t as u64,
            [203, 0, 113, 66],
            50000 + i as u16,
            443,
            300 + (i % 11) as usize,
            120,
        );
    }
    f.write(&dir.join("beacon.pcap"))?;
    // 30,000 datagrams in 3 s to one port, nothing back; a minute of ordinary traffic around.
    let mut f = Frames::default();
    ordinary(&mut f, T0, 2);
    for i in 0..30_000u64 {
        f.udp(
            T0 + 10 * NS + i * 100_000,
            [198, 51, 100, 30],
            40000,
            9,
            18,
            false,
        );
    }
    f.write(&dir.join("udp-flood.pcap"))?;
    let mut f = Frames::default();
    ordinary(&mut f, T0, 2);
    for i in 0..5u64 {
        f.arp_reply(T0 + 20 * NS + i * NS, ATTACKER_MAC, PUMP);
    }
    // The pump's own announcement is no claim against it.
    f.arp_reply(T0 + 5 * NS, PUMP_MAC, PUMP);
    f.write(&dir.join("arp-spoof.pcap"))?;
    let mut f = Frames::default();
    ordinary(&mut f, T0, 2);
    for i in 0..30u8 {
        f.syn(
            T0 + 10 * NS + u64::from(i) * NS / 10,
            [192, 0, 2, 100 + i],
            45000 + u16::from(i),
            23,
        );
    }
    f.write(&dir.join("telnet-sweep.pcap"))?;
    Ok(())
}

/// A DNS query (id `id`) for the pump's server, A, and its answer: 198.51.100.30, TTL 300.
/// Written by hand: the generator depends on no DNS crate, and these are two fixed messages.
fn dns_exchange(id: u16) -> (Vec<u8>, Vec<u8>) {
    let mut question = Vec::new();
    for label in ["infusion-server", "example", "org"] {
        question.push(label.len() as u8);
        question.extend_from_slice(label.as_bytes());
    }
    question.push(0);
    question.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    let header = |flags: u16, answers: u16| {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    let mut ask = header(0x0100, 0);
    ask.extend_from_slice(&question);
    let mut answer = header(0x8180, 1);
    answer.extend_from_slice(&question);
    // The name by a pointer to the question's, A, IN, TTL 300, 4 bytes of address.
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 198, 51, 100, 30]);
    (ask, answer)
}
