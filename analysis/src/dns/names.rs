//! Who resolved what (issue 21 point 2): per device address, the addresses its resolvers
//! answered and the name it asked for (the question's, not the CNAME target's), from the time
//! of the answer until its TTL ends. A flow whose first packet comes in that window (plus
//! [`NameTableConfig::grace_ns`]) goes to that name, and learning proposes `dns: NAME` for it.
//! Bounded per device and in total (the oldest answer goes first), so a device answering
//! itself with random addresses evicts its own names, not its neighbours'. Pure: the offline
//! learner feeds it from captures, the live agent from a passive socket.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::{
    DnsError,
    answer::{Chain, chain},
};
use crate::{
    decode::{Packet, proto},
    flow::{FlowDirection, FlowRecord},
};

/// Bounds and timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameTableConfig {
    /// Addresses kept per device.
    pub per_device: usize,
    /// Addresses kept in all.
    pub total: usize,
    /// How long after the TTL a flow still takes the name: a device may use an address until
    /// just after its record expires, and clocks of capture and flow differ a little.
    pub grace_ns: u64,
    /// TTLs are clamped to [min_ttl_s, max_ttl_s]: a 0 TTL still names the flow that follows
    /// at once, a week-long one does not name the address for a week.
    pub min_ttl_s: u32,
    pub max_ttl_s: u32,
}

impl Default for NameTableConfig {
    fn default() -> Self {
        NameTableConfig {
            per_device: 256,
            total: 65_536,
            grace_ns: 5_000_000_000,
            min_ttl_s: 5,
            max_ttl_s: 86_400,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    /// When the device received the first answer of this run (ns since the Unix epoch).
    from_ns: u64,
    until_ns: u64,
    /// Insertion order, for eviction.
    seq: u64,
}

/// What the table holds and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameTableStats {
    pub answers: u64,
    pub addresses: u64,
    pub evicted: u64,
    /// Answers from a host that is not one of the resolvers, not learned.
    pub not_resolver: u64,
}

#[derive(Clone, Debug, Default)]
pub struct NameTable {
    cfg: NameTableConfig,
    devices: HashMap<IpAddr, HashMap<IpAddr, Entry>>,
    /// seq -> (device, address): the global age order.
    order: BTreeMap<u64, (IpAddr, IpAddr)>,
    seq: u64,
    stats: NameTableStats,
}

impl NameTable {
    pub fn new(cfg: NameTableConfig) -> Self {
        NameTable {
            cfg,
            ..NameTable::default()
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn stats(&self) -> NameTableStats {
        self.stats
    }

    /// An answer (the UDP payload) `device` received at `ts_ns`; the addresses it taught.
    pub fn observe_answer(
        &mut self,
        device: IpAddr,
        ts_ns: u64,
        bytes: &[u8],
    ) -> Result<usize, DnsError> {
        let c = chain(bytes)?;
        Ok(self.observe(device, ts_ns, &c))
    }

    /// A captured packet: a UDP answer from port 53 of a host `is_resolver` accepts teaches
    /// its destination (the device) its addresses. `None` for any other packet.
    pub fn observe_packet(
        &mut self,
        pkt: &Packet<'_>,
        is_resolver: impl Fn(IpAddr) -> bool,
    ) -> Option<Result<usize, DnsError>> {
        if pkt.fragment || pkt.proto != proto::UDP || pkt.src_port != super::PORT {
            return None;
        }
        if !is_resolver(pkt.src) {
            self.stats.not_resolver += 1;
            return None;
        }
        Some(self.observe_answer(pkt.dst, pkt.ts_ns, pkt.payload))
    }

    /// A parsed answer chain `device` received at `ts_ns`: each address goes to the question's
    /// name. Returns the addresses learned.
    pub fn observe(&mut self, device: IpAddr, ts_ns: u64, chain: &Chain) -> usize {
        let Some(name) = chain.names.first() else {
            return 0;
        };
        if chain.addrs.is_empty() {
            return 0;
        }
        self.stats.answers += 1;
        for (addr, ttl) in &chain.addrs {
            let ttl = (*ttl).clamp(self.cfg.min_ttl_s, self.cfg.max_ttl_s);
            let until = ts_ns.saturating_add(u64::from(ttl) * 1_000_000_000);
            self.insert(device, *addr, name, ts_ns, until);
        }
        chain.addrs.len()
    }

    fn insert(&mut self, device: IpAddr, addr: IpAddr, name: &str, from: u64, until: u64) {
        self.seq += 1;
        let seq = self.seq;
        let grace = self.cfg.grace_ns;
        let dev = self.devices.entry(device).or_default();
        let old = dev.get(&addr).cloned();
        if let Some(old) = &old {
            self.order.remove(&old.seq);
        }
        // The same name again while the last answer still holds: one run, from its start, so a
        // flow between the two answers keeps the name.
        let from = match &old {
            Some(o) if o.name == name && from <= o.until_ns.saturating_add(grace) => o.from_ns,
            _ => from,
        };
        let until = match &old {
            Some(o) if o.name == name => until.max(o.until_ns),
            _ => until,
        };
        if old.is_none() && dev.len() >= self.cfg.per_device {
            let oldest = dev
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(a, e)| (*a, e.seq));
            if let Some((a, s)) = oldest {
                dev.remove(&a);
                self.order.remove(&s);
                self.stats.evicted += 1;
            }
        }
        dev.insert(
            addr,
            Entry {
                name: name.to_string(),
                from_ns: from,
                until_ns: until,
                seq,
            },
        );
        self.order.insert(seq, (device, addr));
        self.stats.addresses += 1;
        while self.order.len() > self.cfg.total {
            let Some((_, (d, a))) = self.order.pop_first() else {
                break;
            };
            self.remove(d, a);
            self.stats.evicted += 1;
        }
    }

    fn remove(&mut self, device: IpAddr, addr: IpAddr) {
        if let Some(dev) = self.devices.get_mut(&device) {
            dev.remove(&addr);
            if dev.is_empty() {
                self.devices.remove(&device);
            }
        }
    }

    /// The name `device` resolved `peer` from, if a flow starting at `first_ns` falls in the
    /// answer's window (from the answer to its TTL plus the grace).
    pub fn name_for(&self, device: IpAddr, peer: IpAddr, first_ns: u64) -> Option<&str> {
        let e = self.devices.get(&device)?.get(&peer)?;
        (e.from_ns <= first_ns && first_ns <= e.until_ns.saturating_add(self.cfg.grace_ns))
            .then_some(e.name.as_str())
    }

    /// Sets `peer_name` on the flows the device opened to an address it had resolved; the
    /// number named.
    pub fn label(&self, records: &mut [FlowRecord]) -> usize {
        let mut n = 0;
        for r in records
            .iter_mut()
            .filter(|r| r.direction == FlowDirection::Opened && r.peer_name.is_none())
        {
            if let Some(name) = self.name_for(r.device_addr, r.peer, r.first_seen_ns) {
                r.peer_name = Some(name.to_string());
                n += 1;
            }
        }
        n
    }

    /// Drops answers whose window ended before `now_ns` (the live agent, now and then).
    pub fn expire(&mut self, now_ns: u64) {
        let grace = self.cfg.grace_ns;
        let gone: Vec<(u64, IpAddr, IpAddr)> = self
            .devices
            .iter()
            .flat_map(|(d, m)| {
                m.iter()
                    .filter(|(_, e)| e.until_ns.saturating_add(grace) < now_ns)
                    .map(|(a, e)| (e.seq, *d, *a))
            })
            .collect();
        for (seq, d, a) in gone {
            self.order.remove(&seq);
            self.remove(d, a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn chain(names: &[&str], addrs: &[(&str, u32)]) -> Chain {
        Chain {
            names: names.iter().map(|n| n.to_string()).collect(),
            addrs: addrs.iter().map(|(a, t)| (ip(a), *t)).collect(),
        }
    }

    fn cfg() -> NameTableConfig {
        NameTableConfig {
            grace_ns: 2 * S,
            min_ttl_s: 1,
            ..NameTableConfig::default()
        }
    }

    #[test]
    fn a_flow_within_the_ttl_gets_the_asked_name_and_one_after_it_does_not() {
        let dev = ip("192.0.2.10");
        let mut t = NameTable::new(cfg());
        // A CNAME chain: the name is the one the device asked for.
        let c = chain(
            &["api.vendor.example", "edge.cdn.example"],
            &[("198.51.100.7", 30)],
        );
        assert_eq!(t.observe(dev, T0, &c), 1);
        let peer = ip("198.51.100.7");
        assert_eq!(t.name_for(dev, peer, T0 + S), Some("api.vendor.example"));
        // Within the grace after the TTL, then past it.
        assert_eq!(
            t.name_for(dev, peer, T0 + 31 * S),
            Some("api.vendor.example")
        );
        assert_eq!(t.name_for(dev, peer, T0 + 33 * S), None);
        // Before the answer, for another device, or another address: nothing.
        assert_eq!(t.name_for(dev, peer, T0 - S), None);
        assert_eq!(t.name_for(ip("192.0.2.11"), peer, T0 + S), None);
        assert_eq!(t.name_for(dev, ip("198.51.100.8"), T0 + S), None);
        // A renewed answer extends the run from its first answer.
        t.observe(dev, T0 + 25 * S, &c);
        assert_eq!(
            t.name_for(dev, peer, T0 + 40 * S),
            Some("api.vendor.example")
        );
        assert_eq!(
            t.name_for(dev, peer, T0 + 10 * S),
            Some("api.vendor.example")
        );
        t.expire(T0 + 100 * S);
        assert!(t.is_empty());
    }

    #[test]
    fn ttls_are_clamped() {
        let dev = ip("192.0.2.10");
        let mut t = NameTable::new(NameTableConfig {
            min_ttl_s: 10,
            max_ttl_s: 60,
            grace_ns: 0,
            ..NameTableConfig::default()
        });
        t.observe(dev, T0, &chain(&["a.example"], &[("198.51.100.1", 0)]));
        t.observe(dev, T0, &chain(&["b.example"], &[("198.51.100.2", 86_400)]));
        assert_eq!(
            t.name_for(dev, ip("198.51.100.1"), T0 + 9 * S),
            Some("a.example")
        );
        assert_eq!(t.name_for(dev, ip("198.51.100.2"), T0 + 61 * S), None);
    }

    #[test]
    fn bounds_evict_the_oldest_per_device_and_in_total() {
        let mut t = NameTable::new(NameTableConfig {
            per_device: 3,
            total: 5,
            ..cfg()
        });
        let (a, b) = (ip("192.0.2.10"), ip("192.0.2.11"));
        for i in 0..4u64 {
            let addr = format!("198.51.100.{}", i + 1);
            t.observe(
                a,
                T0 + i * S,
                &chain(&[&format!("n{i}.example")], &[(&addr, 300)]),
            );
        }
        // Device a holds 3: its first answer went.
        assert_eq!(t.len(), 3);
        assert_eq!(t.name_for(a, ip("198.51.100.1"), T0 + 10 * S), None);
        assert_eq!(
            t.name_for(a, ip("198.51.100.4"), T0 + 10 * S),
            Some("n3.example")
        );
        for i in 0..3u64 {
            let addr = format!("203.0.113.{}", i + 1);
            t.observe(
                b,
                T0 + (10 + i) * S,
                &chain(&["b.example"], &[(&addr, 300)]),
            );
        }
        // 6 > 5 in all: the oldest of all (a's second) went, b's three stay.
        assert_eq!(t.len(), 5);
        assert_eq!(t.name_for(a, ip("198.51.100.2"), T0 + 20 * S), None);
        assert_eq!(
            t.name_for(a, ip("198.51.100.3"), T0 + 20 * S),
            Some("n2.example")
        );
        for i in 1..=3 {
            assert_eq!(
                t.name_for(b, ip(&format!("203.0.113.{i}")), T0 + 20 * S),
                Some("b.example")
            );
        }
        assert_eq!(t.stats().evicted, 2);
    }

    #[test]
    fn answers_on_the_wire_label_opened_flows_only() {
        use simple_dns::{
            CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE,
            rdata::{A, CNAME, RData},
        };
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked("Api.Vendor.example"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("api.vendor.example"),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("edge.cdn.example"),
            CLASS::IN,
            20,
            RData::A(A::from(
                "198.51.100.9".parse::<std::net::Ipv4Addr>().unwrap(),
            )),
        ));
        let bytes = p.build_bytes_vec_compressed().unwrap();
        let dev = ip("192.0.2.10");
        let mut t = NameTable::new(cfg());
        assert_eq!(t.observe_answer(dev, T0, &bytes).unwrap(), 1);
        assert!(t.observe_answer(dev, T0, &bytes[..5]).is_err());
        let mut recs = vec![
            crate::flow::tests::record_to(dev, ip("198.51.100.9"), T0 + S),
            crate::flow::tests::record_to(dev, ip("198.51.100.9"), T0 + 60 * S),
            crate::flow::tests::record_to(dev, ip("198.51.100.10"), T0 + S),
        ];
        let mut received = crate::flow::tests::record_to(dev, ip("198.51.100.9"), T0 + S);
        received.direction = FlowDirection::Received;
        recs.push(received);
        assert_eq!(t.label(&mut recs), 1);
        let names: Vec<Option<&str>> = recs.iter().map(|r| r.peer_name.as_deref()).collect();
        assert_eq!(names, [Some("api.vendor.example"), None, None, None]);
    }
}
