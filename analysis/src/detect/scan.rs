//! Scanning within a window: vertical (many ports on one host) and horizontal (many hosts on one
//! port), counting the device's failed first packets (a TCP SYN refused or unanswered, a UDP
//! datagram with no reply) as Zeek's scan policy does. Anchors: Zeek raises at 15 ports or 25
//! hosts in 5 min for any host; a medical device, whose peers are few and fixed, gets tighter
//! counts (8 ports, 10 hosts), scaled by the profile's sensitivity.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation, Threshold,
    finding::{Finding, FlowRef, MAX_LISTED, Matrix, Metric, Severity, Technique},
    window::WindowSet,
};
use crate::{
    decode::proto,
    flow::{FlowDirection, FlowRecord, TcpOutcome},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// The window distinct ports/hosts are counted in (default 300 s, Zeek's).
    pub window_s: u64,
    /// Distinct ports on one peer (default host 15, device 8).
    pub vertical: Threshold,
    /// Distinct peers on one port (default host 25, device 10).
    pub horizontal: Threshold,
    /// Count answered flows too (default false: only failed attempts count, as Zeek).
    pub count_answered: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            window_s: 300,
            vertical: Threshold {
                host: 15,
                device: 8,
            },
            horizontal: Threshold {
                host: 25,
                device: 10,
            },
            count_answered: false,
        }
    }
}

/// Distinct keys tracked per window set (bounds memory on a full-range scan).
const CAP: usize = 4096;

/// Whether the device's first packet of a flow it opened went unanswered or was refused.
pub(crate) fn failed(r: &FlowRecord) -> bool {
    match r.proto {
        proto::TCP => matches!(r.tcp, Some(TcpOutcome::Refused | TcpOutcome::NoAnswer)),
        proto::UDP => r.packets_in == 0,
        _ => false,
    }
}

fn counted(r: &FlowRecord, count_answered: bool) -> bool {
    r.direction == FlowDirection::Opened
        && matches!(r.proto, proto::TCP | proto::UDP)
        && r.port != 0
        && !r.peer.is_multicast()
        && !is_broadcast(r.peer)
        && (count_answered || failed(r))
}

pub(crate) fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast() || v4.octets()[3] == 255)
}

fn proto_label(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "ip",
    }
}

pub struct VerticalScan {
    cfg: ScanConfig,
    sets: HashMap<(String, IpAddr), WindowSet<(u8, u16)>>,
}

impl VerticalScan {
    pub fn new(cfg: ScanConfig) -> Self {
        VerticalScan {
            cfg,
            sets: HashMap::new(),
        }
    }
}

impl Detector for VerticalScan {
    fn name(&self) -> &'static str {
        "scan_vertical"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if !counted(r, self.cfg.count_answered) {
            return;
        }
        let window_ns = self.cfg.window_s * NS;
        let set = self
            .sets
            .entry((r.device.name.clone(), r.peer))
            .or_insert_with(|| WindowSet::new(window_ns, CAP));
        if !set.insert(r.first_seen_ns, (r.proto, r.port)) {
            return;
        }
        let facts = ctx.facts(&r.device);
        let limit = self.cfg.vertical.for_device(&facts);
        let n = set.len() as u32;
        if n < limit {
            return;
        }
        let mut ports: Vec<u16> = set.keys().map(|(_, p)| *p).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(MAX_LISTED);
        let secs = r.first_seen_ns.saturating_sub(set.start_ns()) as f64 / 1e9;
        let sev = if facts.is_site_device() {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut f = Finding::new(
            "scan_vertical",
            &r.device,
            r.first_seen_ns,
            sev,
            confidence(n, limit),
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} probed {n} {} ports on {} in {secs:.3} s (limit {limit} in {} s)",
            r.device.name,
            proto_label(r.proto),
            r.peer,
            self.cfg.window_s
        );
        f.flows.push(FlowRef::from(*r));
        f.evidence.window_start_ns = set.start_ns();
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics =
            vec![Metric::new("distinct_ports", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = ports;
        f.evidence.peers = vec![r.peer];
        out.push(f);
    }
}

pub struct HorizontalScan {
    cfg: ScanConfig,
    sets: HashMap<(String, u8, u16), WindowSet<IpAddr>>,
}

impl HorizontalScan {
    pub fn new(cfg: ScanConfig) -> Self {
        HorizontalScan {
            cfg,
            sets: HashMap::new(),
        }
    }
}

impl Detector for HorizontalScan {
    fn name(&self) -> &'static str {
        "scan_horizontal"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if !counted(r, self.cfg.count_answered) {
            return;
        }
        let window_ns = self.cfg.window_s * NS;
        let set = self
            .sets
            .entry((r.device.name.clone(), r.proto, r.port))
            .or_insert_with(|| WindowSet::new(window_ns, CAP));
        if !set.insert(r.first_seen_ns, r.peer) {
            return;
        }
        let facts = ctx.facts(&r.device);
        let limit = self.cfg.horizontal.for_device(&facts);
        let n = set.len() as u32;
        if n < limit {
            return;
        }
        let mut peers: Vec<IpAddr> = set.keys().copied().collect();
        peers.sort_unstable();
        peers.truncate(MAX_LISTED);
        let secs = r.first_seen_ns.saturating_sub(set.start_ns()) as f64 / 1e9;
        let sev = if facts.is_site_device() {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut f = Finding::new(
            "scan_horizontal",
            &r.device,
            r.first_seen_ns,
            sev,
            confidence(n, limit),
            Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
        );
        f.summary = format!(
            "{} probed {n} hosts on {}/{} in {secs:.3} s (limit {limit} in {} s)",
            r.device.name,
            proto_label(r.proto),
            r.port,
            self.cfg.window_s
        );
        f.flows.push(FlowRef::from(*r));
        f.evidence.window_start_ns = set.start_ns();
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics =
            vec![Metric::new("distinct_hosts", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = peers;
        out.push(f);
    }
}

/// At the threshold 0.6, rising towards 0.99 at three times it.
pub(crate) fn confidence(n: u32, limit: u32) -> f64 {
    let x = f64::from(n) / f64::from(limit.max(1));
    (0.6 + 0.2 * (x - 1.0)).clamp(0.6, 0.99)
}
