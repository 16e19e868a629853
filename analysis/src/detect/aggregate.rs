//! Aggregation: one finding per device, detector and peer within a window. A repeat inside the
//! window updates the open finding (count, last seen, the latest evidence, the highest severity
//! and confidence) instead of raising another; a repeat after a quiet window opens a new one.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    NS,
    finding::{Finding, MAX_FLOWS},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// A repeat later than this after the finding's last detection opens a new finding
    /// (default 1 h).
    pub window_s: u64,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig { window_s: 3600 }
    }
}

type Key = (String, String, Option<IpAddr>);

pub struct Aggregator {
    cfg: AggregateConfig,
    /// Every finding, in the order opened.
    all: Vec<Finding>,
    /// The open finding per key (an index into `all`).
    open: HashMap<Key, usize>,
}

impl Aggregator {
    pub fn new(cfg: AggregateConfig) -> Self {
        Aggregator {
            cfg,
            all: Vec::new(),
            open: HashMap::new(),
        }
    }

    /// Adds one raw detection; returns the finding it opened or updated.
    pub fn add(&mut self, raw: Finding) -> &Finding {
        let key = (raw.device.name.clone(), raw.detector.clone(), raw.peer);
        let window_ns = self.cfg.window_s.saturating_mul(NS);
        if let Some(&i) = self.open.get(&key) {
            let f = &mut self.all[i];
            if raw.time_ns.saturating_sub(f.last_seen_ns) <= window_ns {
                merge(f, raw);
                return &self.all[i];
            }
        }
        let mut f = raw;
        f.id = format!("wg-{:016x}-{:06}", f.first_seen_ns, self.all.len() + 1);
        f.count = f.count.max(1);
        self.all.push(f);
        let i = self.all.len() - 1;
        self.open.insert(key, i);
        &self.all[i]
    }

    /// Every finding, by first seen.
    pub fn all(&self) -> Vec<Finding> {
        let mut v = self.all.clone();
        v.sort_by_key(|f| f.first_seen_ns);
        v
    }
}

fn merge(f: &mut Finding, raw: Finding) {
    f.count += raw.count.max(1);
    f.first_seen_ns = f.first_seen_ns.min(raw.first_seen_ns);
    f.last_seen_ns = f.last_seen_ns.max(raw.last_seen_ns);
    f.time_ns = f.time_ns.max(raw.time_ns);
    f.severity = f.severity.max(raw.severity);
    f.confidence = f.confidence.max(raw.confidence);
    // The latest evidence covers the most (a scan's distinct ports only grow in its window),
    // but the window keeps its earliest start.
    let start = f.evidence.window_start_ns.min(raw.evidence.window_start_ns);
    f.evidence = raw.evidence;
    f.evidence.window_start_ns = start;
    f.summary = raw.summary;
    for fl in raw.flows {
        if f.flows.len() >= MAX_FLOWS {
            break;
        }
        if !f.flows.contains(&fl) {
            f.flows.push(fl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::finding::{Matrix, Severity, Technique},
        flow::DeviceRef,
    };

    fn raw(t: u64, peer: &str, sev: Severity) -> Finding {
        let d = DeviceRef {
            name: "pump-1".into(),
            id: None,
            mac: None,
        };
        let mut f = Finding::new(
            "scan_vertical",
            &d,
            t,
            sev,
            0.5,
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.peer = Some(peer.parse().unwrap());
        f
    }

    #[test]
    fn repeats_in_the_window_update_one_finding() {
        let mut a = Aggregator::new(AggregateConfig { window_s: 60 });
        for i in 0..10 {
            a.add(raw(i * NS, "192.0.2.1", Severity::Medium));
        }
        a.add(raw(20 * NS, "192.0.2.1", Severity::High));
        // Another peer is another finding.
        a.add(raw(21 * NS, "192.0.2.2", Severity::Low));
        let all = a.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].count, 11);
        assert_eq!(all[0].first_seen_ns, 0);
        assert_eq!(all[0].last_seen_ns, 20 * NS);
        assert_eq!(all[0].severity, Severity::High);
        assert_ne!(all[0].id, all[1].id);
        // After a quiet window, a new finding.
        a.add(raw(200 * NS, "192.0.2.1", Severity::Low));
        assert_eq!(a.all().len(), 3);
    }
}
