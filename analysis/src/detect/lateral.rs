//! Device to device across segments: a site device opening a flow to another site device on
//! another VLAN or behind another gateway. Medical devices talk to servers (PACS, HL7 engines,
//! central stations), not to each other across wards; a pump reaching a monitor on another
//! VLAN is how an intruder moves from one device to the next (MITRE ICS T0886, Remote
//! Services). Devices of one segment talking (a monitor and its central station on one VLAN)
//! are left alone.
//!
//! Segments are told apart by the VLAN each device's own records carry (the last one seen),
//! else by the gateway the site puts it behind; with neither known the flow is not judged.
//! A flow the profile admits (a live record with a rule) or a peer the device's baseline knows
//! is expected traffic, not a finding. A flow the datapath denied is raised too: it is what the
//! device tried.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
    is_group_address,
};
use crate::flow::{FlowDirection, FlowOutcome, FlowRecord};

/// Devices whose VLAN is remembered at once; past it, the map starts afresh (the gateway
/// fallback still holds).
const MAX_DEVICES: usize = 65_536;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LateralConfig {
    /// Device classes (profile names) expected to reach devices on other segments, such as a
    /// central monitoring station (default none).
    pub allowed_classes: Vec<String>,
}

pub struct Lateral {
    cfg: LateralConfig,
    vlan_of: HashMap<String, u16>,
}

impl Lateral {
    pub fn new(cfg: LateralConfig) -> Self {
        Lateral {
            cfg,
            vlan_of: HashMap::new(),
        }
    }

    /// Whether the two devices sit on different segments, and how that is known.
    fn across(
        &self,
        a: &FlowRecord,
        b_name: &str,
        a_gw: Option<&str>,
        b_gw: Option<&str>,
    ) -> Option<String> {
        let a_vlan = a.vlan.or_else(|| self.vlan_of.get(&a.device.name).copied());
        let b_vlan = self.vlan_of.get(b_name).copied();
        if let (Some(x), Some(y)) = (a_vlan, b_vlan) {
            return (x != y).then(|| format!("VLAN {x} to VLAN {y}"));
        }
        match (a_gw, b_gw) {
            (Some(x), Some(y)) if x != y => Some(format!("gateway {x} to gateway {y}")),
            _ => None,
        }
    }
}

impl Detector for Lateral {
    fn name(&self) -> &'static str {
        "lateral"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        if let Some(v) = r.vlan {
            if self.vlan_of.len() >= MAX_DEVICES && !self.vlan_of.contains_key(&r.device.name) {
                self.vlan_of.clear();
            }
            self.vlan_of.insert(r.device.name.clone(), v);
        }
        if r.direction != FlowDirection::Opened || is_group_address(r.peer) {
            return;
        }
        let facts = ctx.facts(&r.device);
        let Some(class) = facts.class.as_deref() else {
            return;
        };
        let Some(peer) = ctx.site.owner_of_addr(r.peer) else {
            return;
        };
        if peer.name == facts.name
            || !peer.is_site_device()
            || self.cfg.allowed_classes.iter().any(|c| c == class)
            || r.rule.is_some()
            || ctx
                .baselines
                .get(&facts.name)
                .is_some_and(|l| l.knows_peer(r.peer))
        {
            return;
        }
        let Some(how) = self.across(
            r,
            &peer.name,
            facts.gateway.as_deref(),
            peer.gateway.as_deref(),
        ) else {
            return;
        };
        let denied = r.outcome == FlowOutcome::Denied;
        let mut f = Finding::new(
            "lateral",
            &r.device,
            r.first_seen_ns,
            Severity::High,
            if denied { 0.7 } else { 0.8 },
            Technique::new("T0886", "Remote Services", Matrix::Ics),
        );
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} ({class}) {} {} ({}) on another segment ({how}), port {}/{}",
            facts.name,
            if denied { "tried to reach" } else { "reached" },
            peer.name,
            peer.class.as_deref().unwrap_or("device"),
            super::format::proto_name(r.proto),
            r.port
        );
        f.flows.push(FlowRef::from_opener(r));
        f.evidence.window_start_ns = r.first_seen_ns;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics = vec![Metric::new("bytes", r.bytes() as f64)];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = vec![r.peer];
        f.evidence.names = vec![peer.name.clone()];
        out.push(f);
    }
}
