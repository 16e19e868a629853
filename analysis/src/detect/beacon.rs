//! Beaconing: a device calling a destination outside the site and outside its baseline on a
//! timer. Scored as RITA (Active Countermeasures) scores beacons: over the flow starts to one
//! peer, the intervals' regularity (Bowley skewness near 0, MAD small against the median), the
//! sizes' regularity (the same, on bytes per flow), and, once the calls span hours, the share of
//! those hours with a call. A device's own periodic traffic to known peers (NTP, its server) is
//! never a beacon: peers in the baseline or inside the site are not scored.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, MAX_FLOWS, Matrix, Metric, Severity, Technique},
};
use crate::{baseline::stats::median_mad, flow::FlowDirection};

const NS_PER_HOUR: u64 = 3_600_000_000_000;
/// RITA's dispersion scales: an interval MAD of 30 s, or a size MAD of 32 bytes, scores 0.
const INTERVAL_MAD_SCALE_S: f64 = 30.0;
const SIZE_MAD_SCALE: f64 = 32.0;

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

#[derive(Default)]
struct Calls {
    starts: Vec<u64>,
    bytes: Vec<f64>,
    flows: Vec<FlowRef>,
}

pub struct Beacon {
    cfg: BeaconConfig,
    calls: HashMap<(String, IpAddr), Calls>,
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

/// RITA's regularity score of a series: the mean of (1 - |Bowley skewness|) and
/// (1 - MAD/scale), each in 0-1, where RITA's scales are 30 s for intervals and 32 bytes for
/// sizes. A constant series scores 1.
pub fn regularity(values: &[f64], mad_scale: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let (q1, q2, q3) = quartiles(&s);
    let skew = if q3 - q1 > 0.0 && q2 != q1 && q2 != q3 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    let (_, mad) = median_mad(values);
    let madm = 1.0 - (mad / mad_scale).min(1.0);
    ((1.0 - skew.abs()) + madm) / 2.0
}

/// The beacon score and its parts (time, size, hour coverage when the calls span 2 h or more).
pub fn score(starts: &[u64], bytes: &[f64]) -> (f64, f64, f64, Option<f64>) {
    let mut s = starts.to_vec();
    s.sort_unstable();
    let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9).collect();
    let time = regularity(&gaps, INTERVAL_MAD_SCALE_S);
    let size = regularity(bytes, SIZE_MAD_SCALE);
    let (first, last) = (s[0] / NS_PER_HOUR, s[s.len() - 1] / NS_PER_HOUR);
    let coverage = (last > first).then(|| {
        let mut hours: Vec<u64> = s.iter().map(|t| t / NS_PER_HOUR).collect();
        hours.dedup();
        hours.len() as f64 / (last - first + 1) as f64
    });
    let total = match coverage {
        Some(c) => (time + size + c) / 3.0,
        None => (time + size) / 2.0,
    };
    (total, time, size, coverage)
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
        let c = self
            .calls
            .entry((r.device.name.clone(), r.peer))
            .or_default();
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
        let (total, time, size, coverage) = score(&c.starts, &c.bytes);
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
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} called {} (outside the site and its baseline) {} times every {gm:.1} s ± {gmad:.1} s, {bm:.0} ± {bmad:.0} bytes: beacon score {total:.2}",
            r.device.name,
            r.peer,
            c.starts.len()
        );
        f.flows = c.flows.clone();
        f.evidence.window_start_ns = s[0];
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics = vec![
            Metric::new("beacon_score", total).threshold(self.cfg.threshold),
            Metric::new("interval_score", time),
            Metric::new("size_score", size),
            Metric::new("interval_median_s", gm),
            Metric::new("interval_mad_s", gmad),
            Metric::new("bytes_per_flow_median", bm),
            Metric::new("bytes_per_flow_mad", bmad),
            Metric::new("flows", c.starts.len() as f64),
        ];
        if let Some(cov) = coverage {
            f.evidence.metrics.push(Metric::new("hour_coverage", cov));
        }
        f.evidence.peers = vec![r.peer];
        f.evidence.ports = vec![r.port];
        out.push(f);
    }
}
