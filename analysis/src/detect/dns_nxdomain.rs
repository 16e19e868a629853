//! DGA-like NXDOMAIN bursts: a device told "no such name" for many distinct names in a short
//! window. Malware with a domain generation algorithm tries a list of generated names until one
//! its operator registered answers; nearly all of them do not exist. A medical device asks for
//! the same few names, which exist, and a mistyped or retired server is one name, not dozens.
//!
//! Keyed by device; counts the distinct names whose answer was NXDOMAIN in `window_s`. Raised
//! when they reach the threshold (tighter for site devices, scaled by sensitivity), then again
//! only after as many more. The evidence names the latest few; the peer is the resolver.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation, Threshold,
    finding::{Finding, Matrix, Metric, Severity, Technique},
    scan,
    window::WindowSet,
};
use crate::dns::{self, rcode};

/// Devices tracked at once; past it, devices with nothing in their window go.
const MAX_DEVICES: usize = 65_536;
/// Distinct names held per device (the count is exact up to it).
const MAX_NAMES: usize = 1_024;
/// Names quoted in a finding's evidence (the latest).
const MAX_SAMPLES: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsNxdomainConfig {
    /// The window answers are counted over (default 60 s).
    pub window_s: u64,
    /// Distinct names answered NXDOMAIN that make a burst (default: hosts 20, site devices 10).
    pub names: Threshold,
}

impl Default for DnsNxdomainConfig {
    fn default() -> Self {
        DnsNxdomainConfig {
            window_s: 60,
            names: Threshold {
                host: 20,
                device: 10,
            },
        }
    }
}

struct Burst {
    names: WindowSet<u64>,
    samples: VecDeque<String>,
    since_raised: u32,
}

pub struct DnsNxdomain {
    cfg: DnsNxdomainConfig,
    hasher: foldhash::quality::RandomState,
    devices: HashMap<String, Burst>,
}

impl DnsNxdomain {
    pub fn new(cfg: DnsNxdomainConfig) -> Self {
        DnsNxdomain {
            cfg,
            hasher: Default::default(),
            devices: HashMap::new(),
        }
    }
}

impl Detector for DnsNxdomain {
    fn name(&self) -> &'static str {
        "dns_nxdomain"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Dns(e) = obs else { return };
        if e.rcode != Some(rcode::NXDOMAIN) {
            return;
        }
        let now = e.ts_ns;
        let window = self.cfg.window_s * NS;
        if self.devices.len() >= MAX_DEVICES {
            self.devices.retain(|_, b| {
                b.names.expire(now);
                !b.names.is_empty()
            });
        }
        if !self.devices.contains_key(&e.device.name) && self.devices.len() >= MAX_DEVICES {
            return;
        }
        let h = self.hasher.hash_one(&e.name);
        let b = self
            .devices
            .entry(e.device.name.clone())
            .or_insert_with(|| Burst {
                names: WindowSet::new(window, MAX_NAMES),
                samples: VecDeque::new(),
                since_raised: 0,
            });
        if !b.names.insert(now, h) {
            return;
        }
        b.since_raised += 1;
        if b.samples.len() >= MAX_SAMPLES {
            b.samples.pop_front();
        }
        b.samples.push_back(e.name.clone());
        let facts = ctx.facts(&e.device);
        let limit = self.cfg.names.for_device(&facts, "dns_nxdomain");
        let n = b.names.len() as u32;
        if n < limit || b.since_raised < limit {
            return;
        }
        b.since_raised = 0;
        let first = b.names.start_ns();
        let domains = {
            let mut d: Vec<&str> = b
                .samples
                .iter()
                .map(|s| dns::registered_domain(s))
                .collect();
            d.sort_unstable();
            d.dedup();
            d.len()
        };
        let severity = if facts.is_site_device() {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut f = Finding::new(
            "dns_nxdomain",
            &e.device,
            now,
            severity,
            scan::confidence(n, limit),
            Technique::new(
                "T1568.002",
                "Dynamic Resolution: Domain Generation Algorithms",
                Matrix::Enterprise,
            ),
        );
        f.peer = Some(e.resolver);
        f.summary = format!(
            "{} was answered NXDOMAIN by {} for {n} distinct names in {} s ({domains} domains among the last {}): names a domain generation algorithm tries",
            e.device.name,
            e.resolver,
            now.saturating_sub(first) / NS,
            b.samples.len()
        );
        if let Some(a) = scan::action(&e.device, &facts) {
            f.action = a;
        }
        f.evidence.window_start_ns = first;
        f.evidence.window_end_ns = now;
        f.evidence.metrics =
            vec![Metric::new("nxdomain_names", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = vec![dns::PORT];
        f.evidence.peers = vec![e.resolver];
        f.evidence.names = b.samples.iter().cloned().collect();
        out.push(f);
    }
}
