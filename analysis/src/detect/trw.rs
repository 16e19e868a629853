//! Threshold random walk (Jung, Paxson, Berger, Balakrishnan, "Fast Portscan Detection Using
//! Sequential Hypothesis Testing", IEEE S&P 2004) over a device's first contacts: each TCP
//! connection to a host it has not contacted before either succeeds or fails; the likelihood
//! ratio of "scanner" over "benign" moves by theta1/theta0 on a success and
//! (1-theta1)/(1-theta0) on a failure, and the device is called a scanner when it reaches
//! eta1 = PD/PF (benign when it falls to eta0 = (1-PD)/(1-PF), after which the walk restarts).
//!
//! With the paper's theta0 = 0.8, theta1 = 0.2, PD = 0.99, PF = 0.01 a general host is called
//! after 4 failures in a row. Site devices contact few, fixed peers that nearly always answer
//! (theta0 = 0.9): 3 failures.
//!
//! Walks are per opener, as in the paper (remote sources contacting local hosts): a host that
//! probes devices walks as much as a device that probes out. A failure is
//! `flow::probe::failed_contact` (refused, unanswered, half-open, a flag probe); a contact the
//! datapath denied to a device's own flow is no peer's failure and does not move its walk. The
//! walk decays towards 0 with a half-life (default 10 min), so failures spread over days never
//! add up to a scan.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation,
    finding::{Finding, FlowRef, MAX_LISTED, Matrix, Metric, Technique},
    scan,
};
use crate::{
    decode::proto,
    flow::{FlowDirection, FlowOutcome, TcpOutcome, probe},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrwConfig {
    /// P(first contact succeeds | benign), for general hosts and for site devices.
    pub theta0_host: f64,
    pub theta0_device: f64,
    /// P(first contact succeeds | scanner).
    pub theta1: f64,
    /// Detection and false-positive probabilities the thresholds are set for.
    pub pd: f64,
    pub pf: f64,
    /// Contacted hosts remembered per opener (older ones are forgotten all at once past it).
    pub max_hosts: usize,
    /// The walk's half-life towards 0 (seconds).
    pub half_life_s: u64,
    /// Openers walked at once; past it, walks idle longer than 10 half-lives go.
    pub max_walks: usize,
}

impl Default for TrwConfig {
    fn default() -> Self {
        TrwConfig {
            theta0_host: 0.8,
            theta0_device: 0.9,
            theta1: 0.2,
            pd: 0.99,
            pf: 0.01,
            max_hosts: 8192,
            half_life_s: 600,
            max_walks: 65_536,
        }
    }
}

#[derive(Default)]
struct Walk {
    contacted: HashSet<IpAddr>,
    /// log of the likelihood ratio.
    log_lambda: f64,
    failures: u32,
    successes: u32,
    failed_hosts: Vec<IpAddr>,
    start_ns: u64,
    last_ns: u64,
}

pub struct Trw {
    cfg: TrwConfig,
    walks: HashMap<IpAddr, Walk>,
}

impl Trw {
    pub fn new(cfg: TrwConfig) -> Self {
        Trw {
            cfg,
            walks: HashMap::new(),
        }
    }

    /// Failures in a row that call a scanner, for a given theta0.
    pub fn failures_to_detect(&self, theta0: f64) -> u32 {
        let step = ((1.0 - self.cfg.theta1) / (1.0 - theta0)).ln();
        ((self.cfg.pd / self.cfg.pf).ln() / step).ceil() as u32
    }
}

impl Detector for Trw {
    fn name(&self) -> &'static str {
        "scan_trw"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if r.proto != proto::TCP {
            return;
        }
        if r.direction == FlowDirection::Opened && r.outcome == FlowOutcome::Denied {
            return;
        }
        let success = if probe::failed_contact(r) {
            false
        } else if r.tcp == Some(TcpOutcome::Established) {
            true
        } else {
            return;
        };
        let (from, target) = probe::opener_and_target(r);
        let (subject, facts) = scan::opener(r, ctx);
        let theta0 = if facts.is_site_device() {
            self.cfg.theta0_device
        } else {
            self.cfg.theta0_host
        };
        let cfg = &self.cfg;
        let half_life_ns = cfg.half_life_s.max(1) * NS;
        if self.walks.len() >= cfg.max_walks && !self.walks.contains_key(&from) {
            let now = r.first_seen_ns;
            self.walks
                .retain(|_, w| now.saturating_sub(w.last_ns) < 10 * half_life_ns);
            if self.walks.len() >= cfg.max_walks {
                return;
            }
        }
        let w = self.walks.entry(from).or_default();
        if w.contacted.len() >= cfg.max_hosts {
            w.contacted.clear();
        }
        if !w.contacted.insert(target) {
            return;
        }
        // Decay since the last step: old failures weigh less, and a fully decayed walk starts
        // over (its counts too, so the summary names only the failures that count).
        let dt = r.first_seen_ns.saturating_sub(w.last_ns) as f64;
        if w.last_ns != 0 {
            w.log_lambda *= 0.5f64.powf(dt / half_life_ns as f64);
            if w.log_lambda.abs() < 0.05 {
                *w = Walk {
                    contacted: std::mem::take(&mut w.contacted),
                    ..Walk::default()
                };
            }
        }
        w.last_ns = r.first_seen_ns;
        if w.failures == 0 && w.successes == 0 {
            w.start_ns = r.first_seen_ns;
        }
        if success {
            w.successes += 1;
            w.log_lambda += (cfg.theta1 / theta0).ln();
        } else {
            w.failures += 1;
            if w.failed_hosts.len() < MAX_LISTED {
                w.failed_hosts.push(target);
            }
            w.log_lambda += ((1.0 - cfg.theta1) / (1.0 - theta0)).ln();
        }
        let eta1 = (cfg.pd / cfg.pf).ln();
        let eta0 = ((1.0 - cfg.pd) / (1.0 - cfg.pf)).ln();
        if w.log_lambda <= eta0 {
            *w = Walk {
                contacted: std::mem::take(&mut w.contacted),
                last_ns: w.last_ns,
                ..Walk::default()
            };
            return;
        }
        if w.log_lambda < eta1 {
            return;
        }
        let mut f = Finding::new(
            "scan_trw",
            &subject,
            r.first_seen_ns,
            scan::severity(&facts, r, ctx),
            cfg.pd,
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.summary = format!(
            "{} failed {} of {} first contacts to new hosts (threshold random walk, likelihood ratio {:.0} >= {:.0})",
            subject.name,
            w.failures,
            w.failures + w.successes,
            w.log_lambda.exp(),
            eta1.exp()
        );
        if let Some(a) = scan::action(&subject, &facts) {
            f.action = a;
        }
        f.flows.push(FlowRef::from_opener(r));
        f.evidence.window_start_ns = w.start_ns;
        f.evidence.window_end_ns = r.first_seen_ns;
        f.evidence.metrics = vec![
            Metric::new("failed_first_contacts", f64::from(w.failures)),
            Metric::new("successful_first_contacts", f64::from(w.successes)),
            Metric::new("likelihood_ratio", w.log_lambda.exp()).threshold(eta1.exp()),
        ];
        f.evidence.peers = w.failed_hosts.clone();
        out.push(f);
        // Called: the walk restarts so a continuing scan is raised again (and aggregated).
        *w = Walk {
            contacted: std::mem::take(&mut w.contacted),
            last_ns: w.last_ns,
            ..Walk::default()
        };
    }
}
