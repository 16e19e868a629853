//! The flow table: decoded packets in, flow records out. Tracks each conversation from its first
//! packet (who opened it, the TCP handshake, counters both ways, the first payload bytes each
//! way) until it closes or idles out, then gives one record per device end.

use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt as _};

use serde::{Deserialize, Serialize};

use super::{FlowDirection, FlowIdentity, FlowOutcome, FlowRecord, TcpFlags, TcpOutcome};
use crate::{
    app::AppIdentity,
    decode::{Packet, proto, tcp_flags},
    device::Devices,
    mac::Mac,
};

const NS: u64 = 1_000_000_000;
/// How long a closed TCP flow (RST, or FIN both ways) lingers for its last ACKs.
const CLOSED_LINGER_NS: u64 = 10 * NS;
/// Idle flows are looked for at most this often (capture time).
const SWEEP_EVERY_NS: u64 = 5 * NS;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableConfig {
    /// Idle timeouts, as the profile defaults (conntrack: tcp 3600 s, udp 60 s, icmp 30 s).
    pub tcp_idle_ns: u64,
    pub udp_idle_ns: u64,
    pub other_idle_ns: u64,
    /// Open flows tracked at once; packets of new flows past it are counted and dropped.
    pub max_flows: usize,
    /// A flow still open this long after its start gives its record so far, then a
    /// continuation (`FlowRecord::continuation`) of what it moved since every time it has run
    /// this long more, and the rest when it ends: what the live table does every
    /// `long_running` (60 s), so replay's volume sees a long flow hour by hour as live does.
    /// `None` (the default): one record per flow, what learning and proposals count.
    #[serde(default)]
    pub continue_every_ns: Option<u64>,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            tcp_idle_ns: 3600 * NS,
            udp_idle_ns: 60 * NS,
            other_idle_ns: 30 * NS,
            max_flows: 1 << 20,
            continue_every_ns: None,
        }
    }
}

/// What the table saw, for the learning summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    pub packets: u64,
    pub flows: u64,
    /// Non-first IP fragments (counted on their flow when one matches, ports unknown).
    pub fragments: u64,
    /// Flows with no device at either end (between two routers, or outside the site's devices).
    pub flows_without_device: u64,
    /// Packets of new flows dropped because max_flows were open.
    pub dropped_table_full: u64,
    /// Flows whose first bytes named an application.
    pub flows_identified: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    /// The initiator.
    a: IpAddr,
    a_port: u16,
    b: IpAddr,
    b_port: u16,
}

impl Key {
    fn reversed(self) -> Key {
        Key {
            proto: self.proto,
            a: self.b,
            a_port: self.b_port,
            b: self.a,
            b_port: self.a_port,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Tcp {
    syn: bool,
    synack: bool,
    refused: bool,
    fin: [bool; 2],
    rst: bool,
}

impl Tcp {
    fn closed(&self) -> bool {
        self.rst || self.fin == [true, true]
    }
}

/// One conversation; side 0 opened it, side 1 answered.
#[derive(Clone, Debug)]
struct Conn {
    key: Key,
    macs: [Option<Mac>; 2],
    vlan: Option<u16>,
    packets: [u64; 2],
    bytes: [u64; 2],
    first_ns: u64,
    last_ns: u64,
    icmp_type: Option<u8>,
    tcp: Tcp,
    /// TCP flags each side sent (ORed), and the opener's first packet's.
    flags: [u8; 2],
    first_flags: Option<u8>,
    ident: FlowIdentity,
    /// What its last record held, when it has given one (`continue_every_ns`).
    fed: Option<Fed>,
}

/// A flow's counters and last packet when it last gave a record, and when (capture time).
#[derive(Clone, Copy, Debug)]
struct Fed {
    packets: [u64; 2],
    bytes: [u64; 2],
    last_ns: u64,
    at_ns: u64,
}

impl Conn {
    fn idle_limit(&self, cfg: &FlowTableConfig) -> u64 {
        match self.key.proto {
            proto::TCP if self.tcp.closed() => CLOSED_LINGER_NS,
            proto::TCP => cfg.tcp_idle_ns,
            proto::UDP => cfg.udp_idle_ns,
            _ => cfg.other_idle_ns,
        }
    }

    fn outcome(&self) -> Option<TcpOutcome> {
        (self.key.proto == proto::TCP).then(|| {
            let t = &self.tcp;
            if t.synack {
                TcpOutcome::Established
            } else if t.refused {
                TcpOutcome::Refused
            } else if t.syn {
                TcpOutcome::NoAnswer
            } else if self.flags[1] & tcp_flags::RST != 0
                && self.flags[1] & !(tcp_flags::RST | tcp_flags::ACK) == 0
            {
                // No SYN, and the responder only reset: a probe (NULL, FIN, ACK) or a stray
                // segment refused, never a conversation.
                TcpOutcome::Refused
            } else if self.packets[1] > 0 {
                TcpOutcome::Established
            } else {
                TcpOutcome::Unknown
            }
        })
    }
}

/// A finished conversation, without its payload buffers.
#[derive(Clone, Debug)]
struct Done {
    key: Key,
    macs: [Option<Mac>; 2],
    vlan: Option<u16>,
    packets: [u64; 2],
    bytes: [u64; 2],
    first_ns: u64,
    last_ns: u64,
    icmp_type: Option<u8>,
    tcp: Option<TcpOutcome>,
    flags: [u8; 2],
    first_flags: Option<u8>,
    /// Boxed: most flows have none, and the table moves these records around.
    app: Option<Box<AppIdentity>>,
    continuation: bool,
}

pub struct FlowTable {
    cfg: FlowTableConfig,
    devices: Devices,
    open: HashMap<Key, Conn>,
    done: Vec<Done>,
    stats: TableStats,
    last_sweep_ns: u64,
}

impl FlowTable {
    pub fn new(cfg: FlowTableConfig, devices: Devices) -> Self {
        FlowTable {
            cfg,
            devices,
            open: HashMap::new(),
            done: Vec::new(),
            stats: TableStats::default(),
            last_sweep_ns: 0,
        }
    }

    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    pub fn open_flows(&self) -> usize {
        self.open.len()
    }

    /// Counts one decoded packet into its flow.
    pub fn add(&mut self, pkt: &Packet<'_>) {
        self.stats.packets += 1;
        if pkt.fragment {
            self.stats.fragments += 1;
        }
        self.devices.observe(pkt.src_mac, pkt.src);
        if pkt.ts_ns >= self.last_sweep_ns.saturating_add(SWEEP_EVERY_NS) {
            self.sweep(pkt.ts_ns);
        }
        let fwd = Key {
            proto: pkt.proto,
            a: pkt.src,
            a_port: pkt.src_port,
            b: pkt.dst,
            b_port: pkt.dst_port,
        };
        let (key, side) = if self.open.contains_key(&fwd) {
            (fwd, 0)
        } else if self.open.contains_key(&fwd.reversed()) {
            (fwd.reversed(), 1)
        } else {
            (fwd, usize::MAX)
        };
        // A flow that idled out or closed gives way to a new one on the same addresses and ports.
        if side != usize::MAX {
            let c = &self.open[&key];
            let idle = pkt.ts_ns.saturating_sub(c.last_ns) > c.idle_limit(&self.cfg);
            let new_syn = pkt.proto == proto::TCP
                && c.tcp.closed()
                && pkt.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            if idle || new_syn {
                let c = self.open.remove(&key).expect("present");
                self.finish(c);
                return self.add_new(pkt, fwd);
            }
            let c = self.open.get_mut(&key).expect("present");
            update(c, side, pkt);
        } else {
            self.add_new(pkt, fwd);
        }
    }

    fn add_new(&mut self, pkt: &Packet<'_>, fwd: Key) {
        if self.open.len() >= self.cfg.max_flows {
            self.stats.dropped_table_full += 1;
            return;
        }
        let opener_is_src = opener_is_src(pkt);
        let key = if opener_is_src { fwd } else { fwd.reversed() };
        let side = if opener_is_src { 0 } else { 1 };
        let mut c = Conn {
            key,
            macs: [None; 2],
            vlan: pkt.vlan,
            packets: [0; 2],
            bytes: [0; 2],
            first_ns: pkt.ts_ns,
            last_ns: pkt.ts_ns,
            icmp_type: pkt.icmp.map(|(t, _)| t),
            tcp: Tcp::default(),
            flags: [0; 2],
            first_flags: None,
            ident: FlowIdentity::default(),
            fed: None,
        };
        // The destination's MAC is its own only on Ethernet; SLL gives only the sender's.
        c.macs[1 - side] = pkt.dst_mac;
        update(&mut c, side, pkt);
        self.stats.flows += 1;
        self.open.insert(key, c);
    }

    /// Finishes flows idle longer than their timeout at capture time `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let cfg = &self.cfg;
        let expired: Vec<Conn> = self
            .open
            .extract_if(|_, c| now_ns.saturating_sub(c.last_ns) > c.idle_limit(cfg))
            .map(|(_, c)| c)
            .collect();
        for c in expired {
            self.finish(c);
        }
        let Some(every) = self.cfg.continue_every_ns else {
            return;
        };
        for c in self.open.values_mut() {
            let since = now_ns.saturating_sub(c.fed.map_or(c.first_ns, |f| f.at_ns));
            if since < every {
                continue;
            }
            if let Some(d) = snapshot(c) {
                self.done.push(d);
            }
            c.fed = Some(Fed {
                packets: c.packets,
                bytes: c.bytes,
                last_ns: c.last_ns,
                at_ns: now_ns,
            });
        }
    }

    fn finish(&mut self, c: Conn) {
        if c.ident.app().is_some() {
            self.stats.flows_identified += 1;
        }
        if let Some(d) = snapshot(&c) {
            self.done.push(d);
        }
    }

    /// Finishes every open flow and returns all records, resolving device ends now that the whole
    /// input has been seen (discovery learns devices as it goes).
    pub fn finish_all(mut self) -> (Vec<FlowRecord>, Devices, TableStats) {
        let open: Vec<Conn> = self.open.drain().map(|(_, c)| c).collect();
        for c in open {
            self.finish(c);
        }
        self.done
            .sort_by_key(|d| (d.first_ns, d.key.a, d.key.a_port));
        let mut out = Vec::with_capacity(self.done.len());
        for d in &self.done {
            let before = out.len();
            for side in 0..2 {
                if let Some(r) = record(&self.devices, d, side) {
                    out.push(r);
                }
            }
            if out.len() == before && !d.continuation {
                self.stats.flows_without_device += 1;
            }
        }
        (out, self.devices, self.stats)
    }
}

/// A flow's record as it stands: all of it the first time; after a record, what it moved
/// since (from that record's last packet), if it moved anything and is not a failed TCP
/// contact (its later packets retry the same attempt), as a continuation.
fn snapshot(c: &Conn) -> Option<Done> {
    let tcp = c.outcome();
    let (packets, bytes, first_ns) = match c.fed {
        None => (c.packets, c.bytes, c.first_ns),
        Some(f) => {
            let failed = matches!(tcp, Some(TcpOutcome::NoAnswer | TcpOutcome::Refused));
            if failed || c.packets == f.packets {
                return None;
            }
            let less = |a: [u64; 2], b: [u64; 2]| [a[0] - b[0], a[1] - b[1]];
            (
                less(c.packets, f.packets),
                less(c.bytes, f.bytes),
                f.last_ns,
            )
        }
    };
    Some(Done {
        key: c.key,
        macs: c.macs,
        vlan: c.vlan,
        packets,
        bytes,
        first_ns,
        last_ns: c.last_ns,
        icmp_type: c.icmp_type,
        tcp,
        flags: c.flags,
        first_flags: c.first_flags,
        app: c.ident.app().cloned().map(Box::new),
        continuation: c.fed.is_some(),
    })
}

/// Who opened a flow whose first packet we see: a SYN's sender, a SYN-ACK's receiver; seen
/// mid-stream, the end with the lower port (TCP) or a well-known port (UDP) is the server.
fn opener_is_src(pkt: &Packet<'_>) -> bool {
    let syn = pkt.tcp_flags & tcp_flags::SYN != 0;
    let ack = pkt.tcp_flags & tcp_flags::ACK != 0;
    match pkt.proto {
        proto::TCP if syn => !ack,
        proto::TCP => pkt.src_port >= pkt.dst_port,
        proto::UDP => !(pkt.src_port < 1024 && pkt.dst_port >= 1024),
        _ => true,
    }
}

fn update(c: &mut Conn, side: usize, pkt: &Packet<'_>) {
    c.packets[side] += 1;
    c.bytes[side] += u64::from(pkt.ip_len);
    c.last_ns = c.last_ns.max(pkt.ts_ns);
    if c.macs[side].is_none() {
        c.macs[side] = pkt.src_mac;
    }
    if pkt.proto == proto::TCP && !pkt.fragment {
        let f = pkt.tcp_flags;
        c.flags[side] |= f;
        if side == 0 && c.first_flags.is_none() {
            c.first_flags = Some(f);
        }
        let syn = f & tcp_flags::SYN != 0;
        let ack = f & tcp_flags::ACK != 0;
        if syn {
            if side == 0 && !ack {
                c.tcp.syn = true;
            }
            if side == 1 && ack {
                c.tcp.synack = true;
            }
            c.ident.syn(side, pkt.tcp_seq);
        }
        if f & tcp_flags::RST != 0 {
            if side == 1 && c.tcp.syn && !c.tcp.synack {
                c.tcp.refused = true;
            }
            c.tcp.rst = true;
        }
        if f & tcp_flags::FIN != 0 {
            c.tcp.fin[side] = true;
        }
    }
    let seq = (pkt.proto == proto::TCP).then_some(pkt.tcp_seq);
    c.ident.payload(side, c.key.b_port, seq, pkt.payload);
}

fn record(devices: &Devices, d: &Done, side: usize) -> Option<FlowRecord> {
    let k = &d.key;
    let (addr, port, peer, peer_port) = if side == 0 {
        (k.a, k.a_port, k.b, k.b_port)
    } else {
        (k.b, k.b_port, k.a, k.a_port)
    };
    let device = devices.resolve(d.macs[side], addr)?;
    let other = 1 - side;
    Some(FlowRecord {
        device,
        direction: if side == 0 {
            FlowDirection::Opened
        } else {
            FlowDirection::Received
        },
        device_addr: addr,
        device_port: port,
        peer,
        peer_port,
        proto: k.proto,
        port: k.b_port,
        icmp_type: d.icmp_type,
        vlan: d.vlan,
        packets_out: d.packets[side],
        bytes_out: d.bytes[side],
        packets_in: d.packets[other],
        bytes_in: d.bytes[other],
        first_seen_ns: d.first_ns,
        last_seen_ns: d.last_ns,
        tcp: d.tcp,
        outcome: FlowOutcome::derive(k.proto, d.tcp, d.packets[1], false),
        rule: None,
        app: d.app.as_deref().cloned(),
        tcp_flags: (k.proto == proto::TCP).then(|| TcpFlags {
            // Seen mid-stream from the responder only: its ACK stands for the opening.
            first: d.first_flags.unwrap_or(tcp_flags::ACK),
            sent: d.flags[side],
            received: d.flags[other],
        }),
        peer_name: None,
        continuation: d.continuation,
    })
}
