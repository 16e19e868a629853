//! Accumulating flow records into baselines, one builder per device.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use foldhash::{HashMap, HashMapExt as _};

use super::{
    App, Baseline, Groups, Hour, Limits, Peer, Service, TcpCounts, Window, proto_name,
    stats::{median_mad, periodicity},
};
use crate::{
    aggregate::FlowAggregate,
    flow::{DeviceRef, FlowDirection, FlowRecord, TcpOutcome},
};

const NS_PER_HOUR: u64 = 3_600_000_000_000;

/// Baselines of every device in `records`, over `window` (offline: the capture's span).
pub fn baselines(
    records: &[FlowRecord],
    groups: &Groups,
    limits: &Limits,
    window: Window,
) -> Vec<Baseline> {
    let mut by_dev: BTreeMap<String, BaselineBuilder> = BTreeMap::new();
    for r in records {
        by_dev
            .entry(r.device.name.clone())
            .or_insert_with(|| BaselineBuilder::new(r.device.clone(), limits.clone()))
            .add(r);
    }
    by_dev
        .into_values()
        .map(|b| b.finish(groups, window))
        .collect()
}

struct PeerAcc {
    flows: u64,
    bytes: u64,
    first: u64,
    last: u64,
    starts: Vec<u64>,
}

struct ServiceAcc {
    flows: u64,
    bytes: u64,
    peers: BTreeSet<IpAddr>,
    first: u64,
    last: u64,
}

pub struct BaselineBuilder {
    device: DeviceRef,
    limits: Limits,
    flows: u64,
    bytes_out: u64,
    bytes_in: u64,
    peers: HashMap<IpAddr, PeerAcc>,
    peers_overflow: u64,
    services: HashMap<(FlowDirection, u8, u16), ServiceAcc>,
    services_overflow: u64,
    protocols: BTreeMap<String, u64>,
    apps: HashMap<(String, FlowDirection, u16), (u64, u64)>,
    apps_overflow: u64,
    /// Hour index since the epoch -> (bytes, flows), flows counted in the hour they started.
    hours: BTreeMap<u64, (u64, u64)>,
    tcp: TcpCounts,
}

impl BaselineBuilder {
    pub fn new(device: DeviceRef, limits: Limits) -> Self {
        BaselineBuilder {
            device,
            limits,
            flows: 0,
            bytes_out: 0,
            bytes_in: 0,
            peers: HashMap::new(),
            peers_overflow: 0,
            services: HashMap::new(),
            services_overflow: 0,
            protocols: BTreeMap::new(),
            apps: HashMap::new(),
            apps_overflow: 0,
            hours: BTreeMap::new(),
            tcp: TcpCounts::default(),
        }
    }

    pub fn add(&mut self, r: &FlowRecord) {
        if r.continuation {
            self.add_continuation(r);
            return;
        }
        let l = &self.limits;
        self.flows += 1;
        self.bytes_out += r.bytes_out;
        self.bytes_in += r.bytes_in;
        let bytes = r.bytes();
        if let Some(p) = self.peers.get_mut(&r.peer) {
            p.flows += 1;
            p.bytes += bytes;
            p.first = p.first.min(r.first_seen_ns);
            p.last = p.last.max(r.last_seen_ns);
            if p.starts.len() < l.starts_per_peer {
                p.starts.push(r.first_seen_ns);
            }
        } else if self.peers.len() < l.peers {
            self.peers.insert(
                r.peer,
                PeerAcc {
                    flows: 1,
                    bytes,
                    first: r.first_seen_ns,
                    last: r.last_seen_ns,
                    starts: vec![r.first_seen_ns],
                },
            );
        } else {
            self.peers_overflow += 1;
        }
        let key = (r.direction, r.proto, r.port);
        if let Some(s) = self.services.get_mut(&key) {
            s.flows += 1;
            s.bytes += bytes;
            s.first = s.first.min(r.first_seen_ns);
            s.last = s.last.max(r.last_seen_ns);
            if s.peers.len() < l.peers {
                s.peers.insert(r.peer);
            }
        } else if self.services.len() < l.services {
            self.services.insert(
                key,
                ServiceAcc {
                    flows: 1,
                    bytes,
                    peers: BTreeSet::from([r.peer]),
                    first: r.first_seen_ns,
                    last: r.last_seen_ns,
                },
            );
        } else {
            self.services_overflow += 1;
        }
        *self.protocols.entry(proto_name(r.proto)).or_default() += 1;
        if let Some(app) = &r.app {
            let key = (app.summary(), r.direction, r.port);
            if let Some(a) = self.apps.get_mut(&key) {
                a.0 += 1;
                a.1 = a.1.max(r.last_seen_ns);
            } else if self.apps.len() < l.apps {
                self.apps.insert(key, (1, r.last_seen_ns));
            } else {
                self.apps_overflow += 1;
            }
        }
        let h = self.hours.entry(r.first_seen_ns / NS_PER_HOUR).or_default();
        h.0 += bytes;
        h.1 += 1;
        // Keep the most recent days only.
        while self.hours.len() > l.days * 24 {
            self.hours.pop_first();
        }
        match r.tcp {
            Some(TcpOutcome::Established) => self.tcp.established += 1,
            Some(TcpOutcome::Refused) => self.tcp.refused += 1,
            Some(TcpOutcome::NoAnswer) => self.tcp.no_answer += 1,
            Some(TcpOutcome::Unknown) => self.tcp.unknown += 1,
            None => {}
        }
    }

    /// What a long flow moved since its last record: its bytes in the hour it moved them (as
    /// the live `volume` counts them) and in the totals; no flow, contact, start or service.
    fn add_continuation(&mut self, r: &FlowRecord) {
        let bytes = r.bytes();
        self.bytes_out += r.bytes_out;
        self.bytes_in += r.bytes_in;
        if let Some(p) = self.peers.get_mut(&r.peer) {
            p.bytes += bytes;
            p.last = p.last.max(r.last_seen_ns);
        }
        if let Some(s) = self.services.get_mut(&(r.direction, r.proto, r.port)) {
            s.bytes += bytes;
            s.last = s.last.max(r.last_seen_ns);
        }
        self.hours
            .entry(r.first_seen_ns / NS_PER_HOUR)
            .or_default()
            .0 += bytes;
        while self.hours.len() > self.limits.days * 24 {
            self.hours.pop_first();
        }
    }

    /// Adds one aggregate row (the controller's unit: flows of one day, peer and service).
    /// The same result as adding its flows one by one, except that periodicity sees the row's
    /// kept starts only and app identities past the row's bound are counted as overflow.
    pub fn add_aggregate(&mut self, a: &FlowAggregate) {
        let l = &self.limits;
        let k = &a.key;
        let bytes = a.bytes();
        self.flows += a.flows;
        self.bytes_out += a.bytes_out;
        self.bytes_in += a.bytes_in;
        if let Some(p) = self.peers.get_mut(&k.peer) {
            p.flows += a.flows;
            p.bytes += bytes;
            p.first = p.first.min(a.first_seen_ns);
            p.last = p.last.max(a.last_seen_ns);
            let room = l.starts_per_peer.saturating_sub(p.starts.len());
            p.starts.extend(a.detail.starts.iter().take(room).copied());
        } else if self.peers.len() < l.peers {
            self.peers.insert(
                k.peer,
                PeerAcc {
                    flows: a.flows,
                    bytes,
                    first: a.first_seen_ns,
                    last: a.last_seen_ns,
                    starts: a
                        .detail
                        .starts
                        .iter()
                        .take(l.starts_per_peer)
                        .copied()
                        .collect(),
                },
            );
        } else {
            self.peers_overflow += a.flows;
        }
        let key = (k.direction, k.proto, k.port);
        if let Some(s) = self.services.get_mut(&key) {
            s.flows += a.flows;
            s.bytes += bytes;
            s.first = s.first.min(a.first_seen_ns);
            s.last = s.last.max(a.last_seen_ns);
            if s.peers.len() < l.peers {
                s.peers.insert(k.peer);
            }
        } else if self.services.len() < l.services {
            self.services.insert(
                key,
                ServiceAcc {
                    flows: a.flows,
                    bytes,
                    peers: BTreeSet::from([k.peer]),
                    first: a.first_seen_ns,
                    last: a.last_seen_ns,
                },
            );
        } else {
            self.services_overflow += a.flows;
        }
        *self.protocols.entry(proto_name(k.proto)).or_default() += a.flows;
        for app in &a.detail.apps {
            let key = (app.identity.summary(), k.direction, k.port);
            if let Some(e) = self.apps.get_mut(&key) {
                e.0 += app.flows;
                e.1 = e.1.max(app.last_seen_ns);
            } else if self.apps.len() < l.apps {
                self.apps.insert(key, (app.flows, app.last_seen_ns));
            } else {
                self.apps_overflow += app.flows;
            }
        }
        self.apps_overflow += a.detail.apps_overflow;
        for (h, (b, f)) in &a.detail.hours {
            let e = self
                .hours
                .entry(u64::from(k.day) * 24 + u64::from(*h))
                .or_default();
            e.0 += b;
            e.1 += f;
        }
        while self.hours.len() > l.days * 24 {
            self.hours.pop_first();
        }
        let t = &a.detail.tcp;
        self.tcp.established += t.established;
        self.tcp.refused += t.refused;
        self.tcp.no_answer += t.no_answer;
        self.tcp.unknown += t.unknown;
    }

    pub fn finish(self, groups: &Groups, window: Window) -> Baseline {
        let mut peers: Vec<Peer> = self
            .peers
            .into_iter()
            .map(|(addr, p)| Peer {
                addr,
                group: groups.name(addr).map(str::to_string),
                flows: p.flows,
                bytes: p.bytes,
                first_seen_ns: p.first,
                last_seen_ns: p.last,
                period: periodicity(&p.starts),
            })
            .collect();
        peers.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.addr.cmp(&b.addr)));
        let mut services: Vec<Service> = self
            .services
            .into_iter()
            .map(|((direction, proto, port), s)| Service {
                direction,
                proto,
                port,
                flows: s.flows,
                bytes: s.bytes,
                peers: s.peers.len() as u32,
                first_seen_ns: s.first,
                last_seen_ns: s.last,
            })
            .collect();
        services.sort_by_key(|s| (s.direction, s.proto, s.port));
        let mut apps: Vec<App> = self
            .apps
            .into_iter()
            .map(|((identity, direction, port), (flows, last))| App {
                identity,
                direction,
                port,
                flows,
                last_seen_ns: last,
            })
            .collect();
        apps.sort_by(|a, b| a.identity.cmp(&b.identity).then(a.port.cmp(&b.port)));
        Baseline {
            device: self.device,
            window,
            flows: self.flows,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            peers,
            peers_overflow: self.peers_overflow,
            services,
            services_overflow: self.services_overflow,
            protocols: self.protocols,
            apps,
            apps_overflow: self.apps_overflow,
            hourly: hourly(&self.hours, window, self.limits.days),
            tcp: self.tcp,
        }
    }
}

/// For each hour of day: the values of that hour on every day of the window (0 where the device
/// was silent), summarised by median and MAD.
fn hourly(hours: &BTreeMap<u64, (u64, u64)>, window: Window, max_days: usize) -> Vec<Hour> {
    let first = window.start_ns / NS_PER_HOUR;
    let last = window.end_ns / NS_PER_HOUR;
    // The window's most recent `max_days` days at most.
    let first = first.max(last.saturating_sub(max_days as u64 * 24 - 1));
    let mut per_hour: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 24];
    for h in first..=last {
        let (b, f) = hours.get(&h).copied().unwrap_or_default();
        let slot = &mut per_hour[(h % 24) as usize];
        slot.0.push(b as f64);
        slot.1.push(f as f64);
    }
    per_hour
        .into_iter()
        .enumerate()
        .filter(|(_, (b, _))| !b.is_empty())
        .map(|(hour, (b, f))| {
            let (bytes_median, bytes_mad) = median_mad(&b);
            let (flows_median, flows_mad) = median_mad(&f);
            Hour {
                hour: hour as u8,
                days: b.len() as u32,
                bytes_median,
                bytes_mad,
                flows_median,
                flows_mad,
            }
        })
        .collect()
}
