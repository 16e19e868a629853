//! Aggregation: one finding per device, detector and peer within a window. A repeat inside the
//! window updates the open finding (count, last seen, the latest evidence, the highest severity
//! and confidence) instead of raising another; a repeat after a quiet window opens a new one.
//!
//! Bounded for a gateway that runs for months: a finding whose window ended is closed
//! ([`Aggregator::expire`] hands it over once, then it is gone), and at most
//! [`AggregateConfig::max_open`] stay open: past that the lowest severity (oldest first within
//! it) is closed early and counted ([`Aggregator::evicted`]). Offline, where nothing calls
//! `expire`, closed findings wait in [`Aggregator::all`] for the report.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    NS,
    finding::{Finding, MAX_FLOWS, Severity},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// A repeat later than this after the finding's last detection opens a new finding
    /// (default 1 h).
    pub window_s: u64,
    /// Open findings kept at most; past it the lowest severity is closed early (default 10,000).
    pub max_open: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            window_s: 3600,
            max_open: 10_000,
        }
    }
}

type Key = (String, String, Option<IpAddr>);

/// An open finding and its place in the eviction order.
struct Open {
    finding: Finding,
    /// (severity, order opened): the smallest goes first when the cap is reached.
    rank: (Severity, u64),
}

pub struct Aggregator {
    cfg: AggregateConfig,
    /// The open finding per key.
    open: HashMap<Key, Open>,
    /// Open keys by eviction rank.
    by_rank: BTreeSet<((Severity, u64), Key)>,
    /// Closed findings not yet handed over by `expire`.
    closed: Vec<Finding>,
    /// Findings opened so far (numbers the ids).
    opened: u64,
    /// Findings closed early because `max_open` were open.
    evicted: u64,
}

impl Aggregator {
    pub fn new(cfg: AggregateConfig) -> Self {
        Aggregator {
            cfg,
            open: HashMap::new(),
            by_rank: BTreeSet::new(),
            closed: Vec::new(),
            opened: 0,
            evicted: 0,
        }
    }

    fn window_ns(&self) -> u64 {
        self.cfg.window_s.saturating_mul(NS)
    }

    /// Adds one raw detection; returns the finding it opened or updated.
    pub fn add(&mut self, raw: Finding) -> &Finding {
        let key = (raw.device.name.clone(), raw.detector.clone(), raw.peer);
        let window_ns = self.window_ns();
        let merge_into = self
            .open
            .get(&key)
            .map(|o| raw.time_ns.saturating_sub(o.finding.last_seen_ns) <= window_ns);
        match merge_into {
            Some(true) => {
                let o = self.open.get_mut(&key).expect("looked up above");
                merge(&mut o.finding, raw);
                if o.finding.severity != o.rank.0 {
                    self.by_rank.remove(&(o.rank, key.clone()));
                    o.rank.0 = o.finding.severity;
                    self.by_rank.insert((o.rank, key.clone()));
                }
                return &self.open[&key].finding;
            }
            // A repeat after a quiet window: the old one is closed, a new one opens.
            Some(false) => self.close(&key),
            None => {}
        }
        while self.open.len() >= self.cfg.max_open.max(1) {
            let Some((_, victim)) = self.by_rank.first().cloned() else {
                break;
            };
            self.close(&victim);
            self.evicted += 1;
        }
        self.opened += 1;
        let mut f = raw;
        f.id = format!("wg-{:016x}-{:06}", f.first_seen_ns, self.opened);
        f.count = f.count.max(1);
        let rank = (f.severity, self.opened);
        self.by_rank.insert((rank, key.clone()));
        &self
            .open
            .entry(key)
            .or_insert(Open { finding: f, rank })
            .finding
    }

    fn close(&mut self, key: &Key) {
        if let Some(o) = self.open.remove(key) {
            self.by_rank.remove(&(o.rank, key.clone()));
            self.closed.push(o.finding);
        }
    }

    /// Closes every open finding whose window ended by `now_ns` (no detection for `window_s`)
    /// and hands over every closed finding, each once, in the state it closed in; the
    /// aggregator keeps none of them.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Finding> {
        let window_ns = self.window_ns();
        let ended: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, o)| now_ns.saturating_sub(o.finding.last_seen_ns) > window_ns)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &ended {
            self.close(k);
        }
        std::mem::take(&mut self.closed)
    }

    /// Every finding not yet handed over by `expire` (offline: all of them), by first seen.
    pub fn all(&self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self
            .closed
            .iter()
            .cloned()
            .chain(self.open.values().map(|o| o.finding.clone()))
            .collect();
        v.sort_by(|a, b| (a.first_seen_ns, &a.id).cmp(&(b.first_seen_ns, &b.id)));
        v
    }

    /// Findings open now.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// Closed findings waiting for `expire`.
    pub fn closed_len(&self) -> usize {
        self.closed.len()
    }

    /// Findings closed early because `max_open` were open, since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
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
        let mut a = Aggregator::new(AggregateConfig {
            window_s: 60,
            ..AggregateConfig::default()
        });
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

    #[test]
    fn a_finding_whose_window_ended_is_handed_over_once_and_forgotten() {
        let mut a = Aggregator::new(AggregateConfig {
            window_s: 60,
            ..AggregateConfig::default()
        });
        for i in 0..5 {
            a.add(raw(i * NS, "192.0.2.1", Severity::Medium));
        }
        a.add(raw(30 * NS, "192.0.2.2", Severity::Low));
        // 4 s + 60 s: the first is still inside its window.
        assert!(a.expire(64 * NS).is_empty());
        let closed = a.expire(65 * NS);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].count, closed[0].last_seen_ns), (5, 4 * NS));
        assert!(a.expire(65 * NS).is_empty(), "handed over once");
        assert_eq!((a.open_len(), a.closed_len()), (1, 0));
        // A repeat after the quiet window closes the old one at once and opens another.
        a.add(raw(100 * NS, "192.0.2.2", Severity::Low));
        assert_eq!((a.open_len(), a.closed_len()), (1, 1));
        let closed = a.expire(100 * NS);
        assert_eq!((closed.len(), closed[0].last_seen_ns), (1, 30 * NS));
    }

    #[test]
    fn past_the_cap_the_lowest_severity_oldest_first_is_closed_early_and_counted() {
        let mut a = Aggregator::new(AggregateConfig {
            window_s: 3600,
            max_open: 3,
        });
        a.add(raw(0, "192.0.2.1", Severity::Low));
        a.add(raw(NS, "192.0.2.2", Severity::High));
        a.add(raw(2 * NS, "192.0.2.3", Severity::Low));
        // The first grows to critical: it is no longer the first to go.
        a.add(raw(3 * NS, "192.0.2.1", Severity::Critical));
        a.add(raw(4 * NS, "192.0.2.4", Severity::Medium));
        a.add(raw(5 * NS, "192.0.2.5", Severity::Medium));
        assert_eq!((a.open_len(), a.evicted()), (3, 2));
        let gone: Vec<_> = a
            .expire(6 * NS)
            .into_iter()
            .map(|f| f.peer.unwrap().to_string())
            .collect();
        assert_eq!(gone, ["192.0.2.3", "192.0.2.4"]);
        let open: Vec<_> = a.all().into_iter().map(|f| f.severity).collect();
        assert_eq!(
            open,
            [Severity::Critical, Severity::High, Severity::Medium],
            "the highest severities stay open"
        );
    }

    #[test]
    fn a_million_findings_over_many_windows_keep_the_aggregator_bounded() {
        let max_open = 1_000;
        let mut a = Aggregator::new(AggregateConfig {
            window_s: 60,
            max_open,
        });
        let (mut handed_over, mut peak) = (0u64, (0, 0));
        // 1,000,000 detections, one every 10 ms (about 2.8 hours, 167 windows), over 5,000
        // peers and 50 devices: more distinct keys at once than the cap allows.
        for i in 0..1_000_000u64 {
            let mut f = raw(i * 10_000_000, "192.0.2.1", Severity::Low);
            f.peer = Some(std::net::IpAddr::from([
                198,
                51,
                (i % 5_000 / 250) as u8,
                (i % 250) as u8,
            ]));
            f.device.name = format!("dev-{}", i % 50);
            f.severity = if i % 97 == 0 {
                Severity::High
            } else {
                Severity::Low
            };
            a.add(f);
            peak = (peak.0.max(a.open_len()), peak.1.max(a.closed_len()));
            // The live agent expires about once a second.
            if i % 100 == 0 {
                handed_over += a.expire(i * 10_000_000).len() as u64;
            }
        }
        handed_over += a.expire(u64::MAX).len() as u64;
        assert!(peak.0 <= max_open, "open {} > {max_open}", peak.0);
        assert!(peak.1 <= 2 * max_open, "closed waiting {}", peak.1);
        assert_eq!((a.open_len(), a.closed_len()), (0, 0));
        assert!(a.evicted() > 0, "the cap was reached");
        // Every finding opened was handed over exactly once.
        assert_eq!(handed_over, a.opened);
    }
}
