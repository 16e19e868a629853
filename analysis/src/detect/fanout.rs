//! Fan-out: a device opening flows to many peers it never contacted before within a window
//! (worm spread, discovery sweeps that succeed, a compromised device pivoting). Any protocol and
//! outcome count; multicast and broadcast do not. "Never before" means since the detector
//! started (and, when a baseline is given, not in it).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation, Threshold,
    finding::{Finding, FlowRef, MAX_LISTED, Matrix, Metric, Severity, Technique},
    is_group_address,
    scan::confidence,
    window::WindowSet,
};
use crate::flow::FlowDirection;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutConfig {
    /// Window new peers are counted in (default 300 s).
    pub window_s: u64,
    /// New peers in the window (default host 50, device 15).
    pub new_peers: Threshold,
    /// Peers remembered per device.
    pub max_known: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            window_s: 300,
            new_peers: Threshold {
                host: 50,
                device: 15,
            },
            max_known: 8192,
        }
    }
}

struct State {
    known: HashSet<IpAddr>,
    new: WindowSet<IpAddr>,
}

pub struct FanOut {
    cfg: FanoutConfig,
    devices: HashMap<String, State>,
}

impl FanOut {
    pub fn new(cfg: FanoutConfig) -> Self {
        FanOut {
            cfg,
            devices: HashMap::new(),
        }
    }
}

impl Detector for FanOut {
    fn name(&self) -> &'static str {
        "fanout"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if r.direction != FlowDirection::Opened || is_group_address(r.peer) {
            return;
        }
        // A peer the device's baseline knows (by address, or by a site group it talks to) is
        // not new.
        if let Some(b) = ctx.baselines.get(&r.device.name)
            && (b.knows_peer(r.peer)
                || ctx
                    .site
                    .group_of(r.peer)
                    .is_some_and(|g| b.knows_peer_group(g)))
        {
            return;
        }
        let (window_ns, max_known) = (self.cfg.window_s * NS, self.cfg.max_known);
        let st = self
            .devices
            .entry(r.device.name.clone())
            .or_insert_with(|| State {
                known: HashSet::new(),
                new: WindowSet::new(window_ns, 4096),
            });
        if st.known.len() >= max_known {
            st.known.clear();
        }
        if !st.known.insert(r.peer) {
            return;
        }
        st.new.insert(r.first_seen_ns, r.peer);
        let facts = ctx.facts(&r.device);
        let limit = self.cfg.new_peers.for_device(&facts, "fanout");
        let n = st.new.len() as u32;
        if n < limit {
            return;
        }
        let mut peers: Vec<IpAddr> = st.new.keys().copied().collect();
        peers.sort_unstable();
        peers.truncate(MAX_LISTED);
        let mut f = Finding::new(
            "fanout",
            &r.device,
            r.first_seen_ns,
            if facts.is_site_device() {
                Severity::High
            } else {
                Severity::Medium
            },
            confidence(n, limit),
            Technique::new("T0846", "Remote System Discovery", Matrix::Ics),
        );
        f.summary = format!(
            "{} opened flows to {n} new peers in {:.3} s (limit {limit} in {} s)",
            r.device.name,
            r.first_seen_ns.saturating_sub(st.new.start_ns()) as f64 / 1e9,
            self.cfg.window_s
        );
        f.flows.push(FlowRef::from(*r));
        f.evidence.window_start_ns = st.new.start_ns();
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics =
            vec![Metric::new("new_peers", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.peers = peers;
        out.push(f);
    }
}
