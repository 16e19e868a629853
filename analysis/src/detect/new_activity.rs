//! New activity against the baseline, once its learning window is over: a peer (by address, or
//! by site group when the baseline names its peers by group), a service (direction, protocol,
//! port), an IP protocol, or an application identity (DICOM AE titles, HL7 applications) the
//! device never used while learning. Each new thing is raised once per device (then it is
//! aggregated); a baseline whose list overflowed its bound cannot say what is new in that list,
//! so that list is not judged.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Learned, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use crate::{baseline::proto_name, flow::FlowRecord};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewActivityConfig {
    /// Which kinds are raised (default all four).
    pub peers: bool,
    pub services: bool,
    pub protocols: bool,
    pub apps: bool,
}

impl Default for NewActivityConfig {
    fn default() -> Self {
        NewActivityConfig {
            peers: true,
            services: true,
            protocols: true,
            apps: true,
        }
    }
}

pub struct NewActivity {
    cfg: NewActivityConfig,
    /// (device, kind, what) already raised.
    raised: HashSet<(String, &'static str, String)>,
}

impl NewActivity {
    pub fn new(cfg: NewActivityConfig) -> Self {
        NewActivity {
            cfg,
            raised: HashSet::new(),
        }
    }
}

fn known_peer(b: &Learned, ctx: &Context<'_>, r: &FlowRecord) -> bool {
    if b.knows_peer(r.peer) {
        return true;
    }
    // A peer in a site group the baseline already talks to (a second DNS server of `dns`).
    match ctx.site.group_of(r.peer) {
        Some(g) => b.knows_peer_group(g),
        None => false,
    }
}

impl Detector for NewActivity {
    fn name(&self) -> &'static str {
        "new_activity"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(b) = ctx.baselines.get(&r.device.name) else {
            return;
        };
        if r.first_seen_ns <= b.window().end_ns || super::is_group_address(r.peer) {
            return;
        }
        let mut news: Vec<(&'static str, String, String, Technique)> = Vec::new();
        if self.cfg.peers && !b.peers_overflowed() && !known_peer(b, ctx, r) {
            news.push((
                "new_peer",
                r.peer.to_string(),
                format!("a peer it never talked to while learning: {}", r.peer),
                Technique::new("T0869", "Standard Application Layer Protocol", Matrix::Ics),
            ));
        }
        if self.cfg.services
            && !b.services_overflowed()
            && !b.knows_service(r.direction, r.proto, r.port)
        {
            let what =
                format!("{:?} {}/{}", r.direction, proto_name(r.proto), r.port).to_lowercase();
            news.push((
                "new_service",
                what.clone(),
                format!("a service it never used while learning: {what}"),
                Technique::new("T0885", "Commonly Used Port", Matrix::Ics),
            ));
        }
        if self.cfg.protocols && !b.knows_protocol(r.proto) {
            let pname = proto_name(r.proto);
            news.push((
                "new_protocol",
                pname.clone(),
                format!("an IP protocol it never used while learning: {pname}"),
                Technique::new("T0885", "Commonly Used Port", Matrix::Ics),
            ));
        }
        if let Some(app) = &r.app
            && self.cfg.apps
            && !b.apps_overflowed()
        {
            let id = app.summary();
            if !b.knows_app(&id) {
                news.push((
                    "new_app",
                    id.clone(),
                    format!("an application identity never seen while learning: {id}"),
                    Technique::new("T0869", "Standard Application Layer Protocol", Matrix::Ics),
                ));
            }
        }
        for (kind, what, text, technique) in news {
            if !self
                .raised
                .insert((r.device.name.clone(), kind, what.clone()))
            {
                continue;
            }
            let mut f = Finding::new(
                kind,
                &r.device,
                r.first_seen_ns,
                Severity::Medium,
                0.6,
                technique,
            );
            f.peer = Some(r.peer);
            f.summary = format!("{} opened {text}", r.device.name);
            if r.direction == crate::flow::FlowDirection::Received {
                f.summary = format!("{} received {text}", r.device.name);
            }
            f.flows.push(FlowRef::from(*r));
            f.evidence.window_start_ns = b.window().start_ns;
            f.evidence.window_end_ns = r.first_seen_ns;
            f.evidence.metrics = vec![Metric::new("flows_in_baseline", 0.0).baseline(0.0, 0.0)];
            f.evidence.ports = vec![r.port];
            f.evidence.peers = vec![r.peer];
            f.evidence.names = vec![what];
            out.push(f);
        }
    }
}
