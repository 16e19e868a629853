//! Brute force: many short sessions from one opener to one login service of one host (ssh,
//! telnet, rdp, vnc, smb, databases, ldap, ftp, mail). Each password guess of a tool such as
//! hydra is a connection that completes its handshake, exchanges a few kilobytes and closes
//! within seconds; an engineer's or a monitoring system's sessions to the same service are a
//! handful in the same time. Failed contacts (no handshake) are the scan detectors' evidence,
//! not this one's.
//!
//! Keyed by (opener, target, port): a device guessing a server's passwords, or a host guessing
//! a device's (the opener is the subject either way, as for scans). Raised when the sessions in
//! `window_s` reach the threshold (tighter for site devices, scaled by sensitivity), then again
//! only after as many more.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, NS, Observation, Threshold,
    finding::{Finding, FlowRef, MAX_FLOWS, Matrix, Metric, Technique},
    scan,
};
use crate::{
    decode::proto,
    flow::{FlowRecord, TcpOutcome, probe},
};

/// Keys tracked at once; past it, keys with nothing left in their window go.
const MAX_KEYS: usize = 65_536;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceConfig {
    /// The window sessions are counted over (default 300 s).
    pub window_s: u64,
    /// Sessions to one service that make a brute force (default: hosts 20, site devices 10).
    pub sessions: Threshold,
    /// A session longer than this is someone working, not a guess (default 30 s).
    pub max_session_s: u64,
    /// ... as is one that moved more than this many bytes both ways (default 64 KiB).
    pub max_session_bytes: u64,
    /// The login services watched (TCP ports; default ftp, ssh, telnet, pop3, imap, ldap,
    /// netbios-ssn, smb, rexec, rlogin, ldaps, imaps, pop3s, mssql, mysql, rdp, postgresql, vnc).
    pub ports: Vec<u16>,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig {
            window_s: 300,
            sessions: Threshold {
                host: 20,
                device: 10,
            },
            max_session_s: 30,
            max_session_bytes: 64 * 1024,
            ports: vec![
                21, 22, 23, 110, 139, 143, 389, 445, 512, 513, 636, 993, 995, 1433, 3306, 3389,
                5432, 5900,
            ],
        }
    }
}

#[derive(Default)]
struct Sessions {
    times: VecDeque<u64>,
    flows: Vec<FlowRef>,
    /// Sessions counted since the last finding (raised again after as many more).
    since_raised: u32,
}

pub struct BruteForce {
    cfg: BruteForceConfig,
    keys: HashMap<(String, IpAddr, u16), Sessions>,
}

impl BruteForce {
    pub fn new(cfg: BruteForceConfig) -> Self {
        BruteForce {
            cfg,
            keys: HashMap::new(),
        }
    }

    /// A completed, short, small TCP session with data, to a watched login port.
    fn is_guess(&self, r: &FlowRecord) -> bool {
        r.proto == proto::TCP
            && r.tcp == Some(TcpOutcome::Established)
            && !probe::no_data(r)
            && self.cfg.ports.contains(&r.port)
            && r.last_seen_ns.saturating_sub(r.first_seen_ns) <= self.cfg.max_session_s * NS
            && r.bytes() <= self.cfg.max_session_bytes
    }

    fn forget_idle(&mut self, now_ns: u64) {
        let window = self.cfg.window_s * NS;
        self.keys.retain(|_, s| {
            s.times
                .back()
                .is_some_and(|t| now_ns.saturating_sub(*t) <= window)
        });
    }
}

impl Detector for BruteForce {
    fn name(&self) -> &'static str {
        "brute_force"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if !self.is_guess(r) {
            return;
        }
        let now = r.first_seen_ns;
        let (subject, facts) = scan::opener(r, ctx);
        let (_, target) = probe::opener_and_target(r);
        if self.keys.len() >= MAX_KEYS {
            self.forget_idle(now);
        }
        let key = (subject.name.clone(), target, r.port);
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS {
            return;
        }
        let window = self.cfg.window_s * NS;
        let s = self.keys.entry(key).or_default();
        while s
            .times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > window)
        {
            s.times.pop_front();
        }
        s.times.push_back(now);
        s.since_raised += 1;
        if s.flows.len() < MAX_FLOWS {
            s.flows.push(FlowRef::from_opener(r));
        }
        let limit = self.cfg.sessions.for_device(&facts, "brute_force");
        let n = s.times.len() as u32;
        if n < limit || s.since_raised < limit {
            return;
        }
        s.since_raised = 0;
        let first = s.times.front().copied().unwrap_or(now);
        let mut f = Finding::new(
            "brute_force",
            &subject,
            now,
            scan::severity(&facts, r, ctx),
            scan::confidence(n, limit),
            Technique::new("T1110", "Brute Force", Matrix::Enterprise),
        );
        f.peer = Some(target);
        f.summary = format!(
            "{} opened {n} short sessions to {target}:{} in {} s: password guessing",
            subject.name,
            r.port,
            now.saturating_sub(first) / NS
        );
        if let Some(a) = scan::action(&subject, &facts) {
            f.action = a;
        }
        f.flows = std::mem::take(&mut s.flows);
        f.evidence.window_start_ns = first;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics =
            vec![Metric::new("short_sessions", f64::from(n)).threshold(f64::from(limit))];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = vec![target];
        out.push(f);
    }
}
