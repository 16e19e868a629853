//! Floods: SYN (TCP flows that never completed a handshake), UDP and ICMP packet rates per
//! device within a short window, sent or received. A flow record's packets are spread over its
//! life: a record lasting longer than the window adds only the window's share, so one long,
//! busy, legitimate stream is a rate, not a burst.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation,
    finding::{Finding, FlowRef, MAX_FLOWS, Matrix, Metric, Severity, Technique},
    scale,
};
use crate::{
    decode::proto,
    flow::{FlowDirection, FlowRecord, TcpOutcome},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloodConfig {
    /// The window rates are measured over (default 10 s).
    pub window_s: u64,
    /// Packets per second that make a flood, for site devices (a pump sends a few per second;
    /// defaults SYN 100, UDP 2000, ICMP 100) ...
    pub device_pps: Rates,
    /// ... and for general hosts (defaults SYN 500, UDP 10000, ICMP 500).
    pub host_pps: Rates,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub syn: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            window_s: 10,
            device_pps: Rates {
                syn: 100,
                udp: 2000,
                icmp: 100,
            },
            host_pps: Rates {
                syn: 500,
                udp: 10_000,
                icmp: 500,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Syn,
    Udp,
    Icmp,
}

impl Kind {
    fn of(r: &FlowRecord) -> Option<Kind> {
        match r.proto {
            proto::TCP if matches!(r.tcp, Some(TcpOutcome::NoAnswer | TcpOutcome::Refused)) => {
                Some(Kind::Syn)
            }
            proto::UDP => Some(Kind::Udp),
            proto::ICMP | proto::ICMPV6 => Some(Kind::Icmp),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Syn => "syn",
            Kind::Udp => "udp",
            Kind::Icmp => "icmp",
        }
    }
    fn limit(self, r: &Rates) -> u32 {
        match self {
            Kind::Syn => r.syn,
            Kind::Udp => r.udp,
            Kind::Icmp => r.icmp,
        }
    }
}

#[derive(Default)]
struct Rate {
    entries: VecDeque<(u64, f64)>,
    sum: f64,
    flows: Vec<FlowRef>,
    peers: Vec<std::net::IpAddr>,
}

pub struct Flood {
    cfg: FloodConfig,
    rates: HashMap<(String, FlowDirection, Kind), Rate>,
}

impl Flood {
    pub fn new(cfg: FloodConfig) -> Self {
        Flood {
            cfg,
            rates: HashMap::new(),
        }
    }
}

impl Detector for Flood {
    fn name(&self) -> &'static str {
        "flood"
    }

    /// The packets a flood sent after its first record (the rest of a burst) count too.
    fn takes_continuations(&self) -> bool {
        true
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(kind) = Kind::of(r) else { return };
        // The packets the flooding side sent: the device's when it opened the flow, the peer's
        // when it received it.
        let packets = match r.direction {
            FlowDirection::Opened => r.packets_out,
            FlowDirection::Received => r.packets_in,
        } as f64;
        let window_ns = self.cfg.window_s.max(1) * NS;
        let life = r.last_seen_ns.saturating_sub(r.first_seen_ns).max(1);
        let share = if life > window_ns {
            packets * window_ns as f64 / life as f64
        } else {
            packets
        };
        let rate = self
            .rates
            .entry((r.device.name.clone(), r.direction, kind))
            .or_default();
        let now = r.first_seen_ns;
        while let Some((t, p)) = rate.entries.front().copied() {
            if t + window_ns >= now {
                break;
            }
            rate.entries.pop_front();
            rate.sum -= p;
        }
        if rate.entries.is_empty() {
            rate.sum = 0.0;
            rate.flows.clear();
            rate.peers.clear();
        }
        rate.entries.push_back((now, share));
        rate.sum += share;
        if rate.flows.len() < MAX_FLOWS {
            rate.flows.push(FlowRef::from(*r));
        }
        if rate.peers.len() < 64 && !rate.peers.contains(&r.peer) {
            rate.peers.push(r.peer);
        }
        let facts = ctx.facts(&r.device);
        let rates = if facts.is_site_device() {
            &self.cfg.device_pps
        } else {
            &self.cfg.host_pps
        };
        let pps_limit = scale(kind.limit(rates), facts.sensitivity);
        let limit = f64::from(pps_limit) * self.cfg.window_s.max(1) as f64;
        if rate.sum < limit {
            return;
        }
        let start = rate.entries.front().map(|e| e.0).unwrap_or(now);
        let pps = rate.sum / self.cfg.window_s.max(1) as f64;
        let (who, verb) = match r.direction {
            FlowDirection::Opened => ("sent", "to"),
            FlowDirection::Received => ("received", "from"),
        };
        let mut f = Finding::new(
            "flood",
            &r.device,
            now,
            Severity::High,
            (0.7 + 0.1 * (rate.sum / limit - 1.0)).clamp(0.7, 0.99),
            Technique::new("T0814", "Denial of Service", Matrix::Ics),
        );
        f.detector = format!("flood_{}", kind.name());
        f.peer = (rate.peers.len() == 1).then_some(r.peer);
        f.summary = format!(
            "{} {who} {} {} packets/s {verb} {} peer(s) over {} s (limit {pps_limit}/s)",
            r.device.name,
            pps.round(),
            kind.name(),
            rate.peers.len(),
            self.cfg.window_s
        );
        f.flows = rate.flows.clone();
        f.evidence.window_start_ns = start;
        f.evidence.window_end_ns = rate
            .flows
            .iter()
            .map(|f| f.last_seen_ns)
            .max()
            .unwrap_or(now)
            .max(now);
        f.evidence.metrics =
            vec![Metric::new("packets_per_second", pps).threshold(f64::from(pps_limit))];
        f.evidence.peers = rate.peers.clone();
        f.evidence.names = vec![kind.name().into()];
        out.push(f);
    }
}
