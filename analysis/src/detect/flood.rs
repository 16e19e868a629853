//! Floods: SYN (TCP flows that never completed a handshake), UDP and ICMP packet rates per
//! device within a short window, sent or received. A flow record's packets are spread over its
//! life: a record lasting longer than the window adds only the window's share, so one long,
//! busy, legitimate stream is a rate, not a burst. A record far shorter than the window is also
//! judged on its own rate (over at least a second), so a burst is not averaged away.

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

/// Which way a device's flood goes: packets it sent, or packets it received from its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Sent,
    Received,
}

/// The packets of a record that may be a flood, by the side of the device they went.
///
/// The side that opened the record always counts. For ICMP and ICMPv6 the answering side counts
/// too, beyond one packet per packet of the opener: the flow key ignores ICMP types, so an echo
/// flood sent after its victim's neighbour advertisement (or echo request, or error) to the
/// attacker lands in the record the victim opened, as its answer. ICMP has no bulk answers of
/// its own (an echo reply per request at most), so that excess is the answering side's flood,
/// and echo replies to someone else's flood are not. TCP and UDP are left to the opener: a
/// download, a file read over TFTP or a stream a device asked for is a legitimate answer far
/// larger than its request, and a SYN flood is by definition unanswered.
fn sides(r: &FlowRecord, kind: Kind) -> Vec<(Side, u64)> {
    let (opener, answer) = match r.direction {
        FlowDirection::Opened => ((Side::Sent, r.packets_out), (Side::Received, r.packets_in)),
        FlowDirection::Received => ((Side::Received, r.packets_in), (Side::Sent, r.packets_out)),
    };
    let mut v = vec![opener];
    if kind == Kind::Icmp && answer.1 > opener.1 {
        v.push((answer.0, answer.1 - opener.1));
    }
    v
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
    rates: HashMap<(String, Side, Kind), Rate>,
}

impl Flood {
    pub fn new(cfg: FloodConfig) -> Self {
        Flood {
            cfg,
            rates: HashMap::new(),
        }
    }

    /// Adds `packets` of one side of a record to the device's rate and raises a flood when the
    /// window's rate, or the record's own, reaches the limit.
    fn count(
        &mut self,
        r: &FlowRecord,
        kind: Kind,
        side: Side,
        packets: u64,
        ctx: &Context<'_>,
        out: &mut Vec<Finding>,
    ) {
        let packets = packets as f64;
        let window_s = self.cfg.window_s.max(1);
        let window_ns = window_s * NS;
        let life = r.last_seen_ns.saturating_sub(r.first_seen_ns).max(1);
        let share = if life > window_ns {
            packets * window_ns as f64 / life as f64
        } else {
            packets
        };
        // A burst: the record's own rate over its life, but over no less than a second (a
        // capture's one timestamp for 10,000 datagrams is not an infinite rate). The window
        // average alone would spread a burst far shorter than the window over all of it.
        let burst_s = (life as f64 / NS as f64).max(1.0);
        let burst_pps = packets / burst_s;
        let rate = self
            .rates
            .entry((r.device.name.clone(), side, kind))
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
            rate.flows.push(FlowRef::from(r));
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
        let window_pps = rate.sum / window_s as f64;
        let limit = f64::from(pps_limit);
        let mut raise = |pps: f64, span: f64, start: u64, one: bool| {
            // The window's finding is about every peer in it (named when there is one); a
            // burst's is about this record alone, so it names the same peer whatever else the
            // window holds (live, a burst's rest can reach the engine after later flows).
            let (peers, flows, end) = if one {
                (
                    vec![r.peer],
                    vec![FlowRef::from(r)],
                    r.last_seen_ns.max(now),
                )
            } else {
                let end = rate.flows.iter().map(|f| f.last_seen_ns).max();
                (
                    rate.peers.clone(),
                    rate.flows.clone(),
                    end.unwrap_or(now).max(now),
                )
            };
            let (who, verb) = match side {
                Side::Sent => ("sent", "to"),
                Side::Received => ("received", "from"),
            };
            let mut f = Finding::new(
                "flood",
                &r.device,
                now,
                Severity::High,
                (0.7 + 0.1 * (pps / limit - 1.0)).clamp(0.7, 0.99),
                Technique::new("T0814", "Denial of Service", Matrix::Ics),
            );
            f.detector = format!("flood_{}", kind.name());
            f.peer = (peers.len() == 1).then_some(peers[0]);
            f.summary = format!(
                "{} {who} {} {} packets/s {verb} {} peer(s) over {} s (limit {pps_limit}/s)",
                r.device.name,
                pps.round(),
                kind.name(),
                peers.len(),
                (span * 10.0).round() / 10.0
            );
            f.flows = flows;
            f.evidence.window_start_ns = start;
            f.evidence.window_end_ns = end;
            f.evidence.metrics = vec![Metric::new("packets_per_second", pps).threshold(limit)];
            f.evidence.peers = peers;
            f.evidence.names = vec![kind.name().into()];
            out.push(f);
        };
        if window_pps >= limit {
            let start = rate.entries.front().map(|e| e.0).unwrap_or(now);
            raise(window_pps, window_s as f64, start, false);
        }
        // A burst over the limit on its own is also its own finding (the same one as the
        // window's when the window holds only its peer: they aggregate).
        if burst_pps >= limit && burst_pps > window_pps {
            raise(burst_pps, burst_s, now, true);
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
        for (side, packets) in sides(r, kind) {
            if packets > 0 {
                self.count(r, kind, side, packets, ctx, out);
            }
        }
    }
}
