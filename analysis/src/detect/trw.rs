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

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, MAX_LISTED, Matrix, Metric, Severity, Technique},
};
use crate::{
    decode::proto,
    flow::{FlowDirection, TcpOutcome},
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
    /// Contacted hosts remembered per device (older ones are forgotten all at once past it).
    pub max_hosts: usize,
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
}

pub struct Trw {
    cfg: TrwConfig,
    walks: HashMap<String, Walk>,
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
        if r.direction != FlowDirection::Opened || r.proto != proto::TCP {
            return;
        }
        let success = match r.tcp {
            Some(TcpOutcome::Established) => true,
            Some(TcpOutcome::Refused | TcpOutcome::NoAnswer) => false,
            _ => return,
        };
        let facts = ctx.facts(&r.device);
        let theta0 = if facts.is_site_device() {
            self.cfg.theta0_device
        } else {
            self.cfg.theta0_host
        };
        let cfg = &self.cfg;
        let w = self.walks.entry(r.device.name.clone()).or_default();
        if w.contacted.len() >= cfg.max_hosts {
            w.contacted.clear();
        }
        if !w.contacted.insert(r.peer) {
            return;
        }
        if w.failures == 0 && w.successes == 0 {
            w.start_ns = r.first_seen_ns;
        }
        if success {
            w.successes += 1;
            w.log_lambda += (cfg.theta1 / theta0).ln();
        } else {
            w.failures += 1;
            if w.failed_hosts.len() < MAX_LISTED {
                w.failed_hosts.push(r.peer);
            }
            w.log_lambda += ((1.0 - cfg.theta1) / (1.0 - theta0)).ln();
        }
        let eta1 = (cfg.pd / cfg.pf).ln();
        let eta0 = ((1.0 - cfg.pd) / (1.0 - cfg.pf)).ln();
        if w.log_lambda <= eta0 {
            *w = Walk {
                contacted: std::mem::take(&mut w.contacted),
                ..Walk::default()
            };
            return;
        }
        if w.log_lambda < eta1 {
            return;
        }
        let mut f = Finding::new(
            "scan_trw",
            &r.device,
            r.first_seen_ns,
            if facts.is_site_device() {
                Severity::High
            } else {
                Severity::Medium
            },
            cfg.pd,
            Technique::new("T1046", "Network Service Discovery", Matrix::Enterprise),
        );
        f.summary = format!(
            "{} failed {} of {} first contacts to new hosts (threshold random walk, likelihood ratio {:.0} >= {:.0})",
            r.device.name,
            w.failures,
            w.failures + w.successes,
            w.log_lambda.exp(),
            eta1.exp()
        );
        f.flows.push(FlowRef::from(*r));
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
            ..Walk::default()
        };
    }
}
