//! Volume spikes: the bytes a device moves in a clock hour against the same hour of day in its
//! baseline, with robust statistics (median and MAD over the window's days), never a fixed
//! threshold: a spike is above median + k * 1.4826 * MAD (1.4826 * MAD estimates a standard
//! deviation for normal data), and at least `min_ratio` times the median and `min_bytes` (so an
//! hour whose baseline is near zero is not raised for a few packets).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::LearnedHour;
use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use wardgate_policy::profile::Sensitivity;

const NS_PER_HOUR: u64 = 3_600_000_000_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeConfig {
    /// MADs above the median (default 6 at medium sensitivity; low 9, high 4).
    pub k: f64,
    /// Times the median at least (default 3).
    pub min_ratio: f64,
    /// Bytes in the hour at least (default 1 MiB).
    pub min_bytes: u64,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            k: 6.0,
            min_ratio: 3.0,
            min_bytes: 1 << 20,
        }
    }
}

pub struct Volume {
    cfg: VolumeConfig,
    /// Device -> (hour index since the epoch, bytes so far, first flow of the hour).
    current: HashMap<String, (u64, u64, u64)>,
}

impl Volume {
    pub fn new(cfg: VolumeConfig) -> Self {
        Volume {
            cfg,
            current: HashMap::new(),
        }
    }

    /// The limit for one hour of day.
    pub fn limit(&self, h: Option<&LearnedHour>, s: Sensitivity) -> f64 {
        let k = match s {
            Sensitivity::Low => self.cfg.k * 1.5,
            Sensitivity::Medium => self.cfg.k,
            Sensitivity::High => self.cfg.k / 1.5,
        };
        let (m, mad) = median_mad(h);
        (m + k * 1.4826 * mad)
            .max(m * self.cfg.min_ratio)
            .max(self.cfg.min_bytes as f64)
    }
}

/// The hour's byte median and MAD (0 for an hour the window never held).
fn median_mad(h: Option<&LearnedHour>) -> (f64, f64) {
    h.map(|h| (f64::from(h.bytes_median), f64::from(h.bytes_mad)))
        .unwrap_or((0.0, 0.0))
}

impl Detector for Volume {
    fn name(&self) -> &'static str {
        "volume"
    }

    /// A long flow's bytes count in the hour it moved them, every stretch of it.
    fn takes_continuations(&self) -> bool {
        true
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(b) = ctx.baselines.get(&r.device.name) else {
            return;
        };
        if r.first_seen_ns <= b.window().end_ns {
            return;
        }
        let hour = r.first_seen_ns / NS_PER_HOUR;
        let cur = self
            .current
            .entry(r.device.name.clone())
            .or_insert((hour, 0, r.first_seen_ns));
        if cur.0 != hour {
            *cur = (hour, 0, r.first_seen_ns);
        }
        let before = cur.1;
        cur.1 += r.bytes();
        let (total, start) = (cur.1, cur.2);
        let hod = (hour % 24) as u8;
        let h = b.hour(hod);
        let facts = ctx.facts(&r.device);
        let limit = self.limit(h, facts.sensitivity);
        // Raised when the hour crosses the limit, and updated by each flow after.
        if (total as f64) < limit || (before as f64) >= limit && r.bytes() == 0 {
            return;
        }
        let (m, mad) = median_mad(h);
        let mut f = Finding::new(
            "volume",
            &r.device,
            r.first_seen_ns,
            Severity::Medium,
            if h.is_some_and(|h| h.days >= 3) {
                0.8
            } else {
                0.5
            },
            Technique::new("T1041", "Exfiltration Over C2 Channel", Matrix::Enterprise),
        );
        f.summary = format!(
            "{} moved {total} bytes in hour {hod:02}:00 UTC; its baseline for that hour is {m:.0} (MAD {mad:.0}), limit {limit:.0}",
            r.device.name
        );
        f.flows.push(FlowRef::from(*r));
        f.evidence.window_start_ns = start;
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics = vec![
            Metric::new("bytes_per_hour", total as f64)
                .baseline(m, mad)
                .threshold(limit),
        ];
        f.evidence.peers = vec![r.peer];
        out.push(f);
    }
}
