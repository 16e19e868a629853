//! Beaconing: a device calling a destination outside the site and outside its baseline on a
//! timer. Scored as RITA (Active Countermeasures, v5) scores beacons, over the flow starts to
//! one peer: the intervals' regularity (Bowley skewness near 0, MAD small relative to the
//! median interval), the sizes' regularity (skewness, MAD against 32 bytes), the duration (the
//! share of the hourly bins the calls span that hold a call) and the histogram (calls per hourly
//! bin steady: 1 - coefficient of variation). Nothing is scored before the calls span 6 hourly
//! bins: a burst of calls within an hour is no beacon. A device's own periodic traffic to known
//! peers (NTP, its server) is never a beacon: peers in the baseline or inside the site are not
//! scored.
//!
//! A series is keyed by the DNS name the device resolved when its records carry one
//! (`FlowRecord::peer_name`; RITA keys by FQDN where known), else by the address: a name behind
//! rotating addresses (a CDN, fast flux) is one series, not one short one per address. Such a
//! finding names the name (summary and `evidence.names`), lists the addresses called
//! (`evidence.peers`), and keeps the series' first address as its peer, so the aggregator holds
//! one finding per series.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, MAX_FLOWS, MAX_LISTED, Matrix, Metric, Severity, Technique},
};
use crate::{baseline::stats::median_mad, flow::FlowDirection};

const NS_PER_HOUR: u64 = 3_600_000_000_000;
/// RITA's size dispersion scale: a size MAD of 32 bytes scores 0.
const SIZE_MAD_SCALE: f64 = 32.0;
/// Hourly bins the calls must span before they are scored (RITA's duration minimum).
pub const MIN_HOURS: u64 = 6;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// Flows to one peer before it is scored (default 8).
    pub min_flows: usize,
    /// Score (0-1) at which it is raised (default 0.8).
    pub threshold: f64,
    /// Starts kept per peer (default 512).
    pub max_starts: usize,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            min_flows: 8,
            threshold: 0.8,
            max_starts: 512,
        }
    }
}

/// Whom a series of calls goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Callee {
    /// The name the device resolved the addresses from.
    Name(String),
    /// An address no answer named.
    Addr(IpAddr),
}

#[derive(Default)]
struct Calls {
    starts: Vec<u64>,
    bytes: Vec<f64>,
    flows: Vec<FlowRef>,
    /// Distinct addresses called, first first (at most `MAX_LISTED`).
    peers: Vec<IpAddr>,
}

pub struct Beacon {
    cfg: BeaconConfig,
    calls: HashMap<(String, Callee), Calls>,
}

impl Beacon {
    pub fn new(cfg: BeaconConfig) -> Self {
        Beacon {
            cfg,
            calls: HashMap::new(),
        }
    }
}

/// Quartiles by linear interpolation over sorted values.
fn quartiles(sorted: &[f64]) -> (f64, f64, f64) {
    let q = |p: f64| {
        let x = p * (sorted.len() - 1) as f64;
        let (i, frac) = (x.floor() as usize, x.fract());
        let next = sorted[(i + 1).min(sorted.len() - 1)];
        sorted[i] + frac * (next - sorted[i])
    };
    (q(0.25), q(0.5), q(0.75))
}

/// Bowley skewness's part of a regularity score: 1 - |skewness|, 1 for a symmetric series.
fn symmetry(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let (q1, q2, q3) = quartiles(&s);
    let skew = if q3 - q1 > 0.0 && q2 != q1 && q2 != q3 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    1.0 - skew.abs()
}

/// RITA's regularity score of a series with an absolute MAD scale: the mean of
/// (1 - |Bowley skewness|) and (1 - MAD/scale), each in 0-1. A constant series scores 1.
pub fn regularity(values: &[f64], mad_scale: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let (_, mad) = median_mad(values);
    (symmetry(values) + 1.0 - (mad / mad_scale).min(1.0)) / 2.0
}

/// The same with the MAD relative to the median (RITA v5's interval score: a 5 s MAD is
/// irregular for a 10 s timer and regular for an hourly one).
pub fn relative_regularity(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let (median, mad) = median_mad(values);
    if median <= 0.0 {
        return 0.0;
    }
    (symmetry(values) + 1.0 - (mad / median).min(1.0)) / 2.0
}

/// A beacon score and its parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub total: f64,
    pub time: f64,
    pub size: f64,
    /// Share of the spanned hourly bins with a call.
    pub duration: f64,
    /// 1 - coefficient of variation of the calls per spanned hourly bin.
    pub histogram: f64,
    pub hours: u64,
}

/// The beacon score of calls starting at `starts` with `bytes` each, or None while they span
/// fewer than [`MIN_HOURS`] hourly bins.
pub fn score(starts: &[u64], bytes: &[f64]) -> Option<Score> {
    let mut s = starts.to_vec();
    s.sort_unstable();
    let (first, last) = (s.first()? / NS_PER_HOUR, s.last()? / NS_PER_HOUR);
    let hours = last - first + 1;
    if hours < MIN_HOURS {
        return None;
    }
    let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9).collect();
    let time = relative_regularity(&gaps);
    let size = regularity(bytes, SIZE_MAD_SCALE);
    let mut per_hour = vec![0f64; hours as usize];
    for t in &s {
        per_hour[(t / NS_PER_HOUR - first) as usize] += 1.0;
    }
    let duration = per_hour.iter().filter(|c| **c > 0.0).count() as f64 / hours as f64;
    let mean = per_hour.iter().sum::<f64>() / hours as f64;
    let var = per_hour.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / hours as f64;
    let histogram = 1.0 - (var.sqrt() / mean).min(1.0);
    Some(Score {
        total: (time + size + duration + histogram) / 4.0,
        time,
        size,
        duration,
        histogram,
        hours,
    })
}

impl Detector for Beacon {
    fn name(&self) -> &'static str {
        "beacon"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if r.direction != FlowDirection::Opened || r.peer.is_multicast() {
            return;
        }
        let Some(b) = ctx.baselines.get(&r.device.name) else {
            return;
        };
        if ctx.site.is_inside(r.peer) || b.knows_peer(r.peer) {
            return;
        }
        let callee = match &r.peer_name {
            Some(n) => Callee::Name(n.clone()),
            None => Callee::Addr(r.peer),
        };
        let c = self
            .calls
            .entry((r.device.name.clone(), callee))
            .or_default();
        if !c.peers.contains(&r.peer) && c.peers.len() < MAX_LISTED {
            c.peers.push(r.peer);
        }
        if c.starts.len() >= self.cfg.max_starts {
            c.starts.remove(0);
            c.bytes.remove(0);
        }
        c.starts.push(r.first_seen_ns);
        c.bytes.push(r.bytes() as f64);
        if c.flows.len() < MAX_FLOWS {
            c.flows.push(FlowRef::from(*r));
        }
        if c.starts.len() < self.cfg.min_flows {
            return;
        }
        let Some(sc) = score(&c.starts, &c.bytes) else {
            return;
        };
        let total = sc.total;
        if total < self.cfg.threshold {
            return;
        }
        let mut s = c.starts.clone();
        s.sort_unstable();
        let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9).collect();
        let (gm, gmad) = median_mad(&gaps);
        let (bm, bmad) = median_mad(&c.bytes);
        let mut f = Finding::new(
            "beacon",
            &r.device,
            r.first_seen_ns,
            Severity::High,
            total,
            Technique::new("T1071", "Application Layer Protocol", Matrix::Enterprise),
        );
        // The series' first address: one aggregation key while the name's addresses rotate.
        f.peer = c.peers.first().copied();
        let callee = match &r.peer_name {
            Some(n) if c.peers.len() > 1 => format!("{n} (at {} addresses)", c.peers.len()),
            Some(n) => format!("{n} ({})", r.peer),
            None => r.peer.to_string(),
        };
        f.summary = format!(
            "{} called {callee} (outside the site and its baseline) {} times every {gm:.1} s ± {gmad:.1} s, {bm:.0} ± {bmad:.0} bytes: beacon score {total:.2}",
            r.device.name,
            c.starts.len()
        );
        f.flows = c.flows.clone();
        f.evidence.window_start_ns = s[0];
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics = vec![
            Metric::new("beacon_score", total).threshold(self.cfg.threshold),
            Metric::new("interval_score", sc.time),
            Metric::new("size_score", sc.size),
            Metric::new("duration_score", sc.duration),
            Metric::new("histogram_score", sc.histogram),
            Metric::new("hours", sc.hours as f64),
            Metric::new("interval_median_s", gm),
            Metric::new("interval_mad_s", gmad),
            Metric::new("bytes_per_flow_median", bm),
            Metric::new("bytes_per_flow_mad", bmad),
            Metric::new("flows", c.starts.len() as f64),
        ];
        f.evidence.peers = c.peers.clone();
        f.evidence.names = r.peer_name.iter().cloned().collect();
        f.evidence.ports = vec![r.port];
        out.push(f);
    }
}
