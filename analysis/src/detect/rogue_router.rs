//! A device acting as a router: an IPv6 router advertisement (ICMPv6 134) or redirect (137), or
//! an IPv4 ICMP redirect (5), sent by a device. Hosts on the VLAN take the sender as their
//! default route or next hop, so its traffic passes through the device (adversary in the
//! middle, MITRE T1557). Raised at once.
//!
//! Only site devices are judged: the site's routers are hosts it does not list as devices.
//! (The datapath drops a device's router advertisements; this says who tried, from the flow
//! records and offline from captures.)

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use crate::{
    decode::proto,
    flow::{FlowDirection, FlowRecord},
};

/// ICMP messages only a router sends; a misconfigured device stack (IPv6 forwarding left on)
/// sends them too, which is as much a finding.
const CONFIDENCE: f64 = 0.85;

#[derive(Default)]
pub struct RogueRouter;

/// What `r` announces, if it is a router's message the device sent first.
fn router_message(r: &FlowRecord) -> Option<&'static str> {
    if r.direction != FlowDirection::Opened {
        return None;
    }
    match (r.proto, r.icmp_type?) {
        (proto::ICMPV6, 134) => Some("router advertisement"),
        (proto::ICMPV6, 137) => Some("ICMPv6 redirect"),
        (proto::ICMP, 5) => Some("ICMP redirect"),
        _ => None,
    }
}

impl Detector for RogueRouter {
    fn name(&self) -> &'static str {
        "rogue_router"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(message) = router_message(r) else {
            return;
        };
        if !ctx.facts(&r.device).is_site_device() {
            return;
        }
        let mut f = Finding::new(
            "rogue_router",
            &r.device,
            r.first_seen_ns,
            Severity::High,
            CONFIDENCE,
            Technique::new("T1557", "Adversary-in-the-Middle", Matrix::Enterprise),
        );
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} sent {} {message} to {}: hosts that accept it route their traffic through the device",
            r.device.name,
            if message.starts_with('I') { "an" } else { "a" },
            r.peer
        );
        f.flows.push(FlowRef::from_opener(r));
        f.evidence.window_start_ns = r.first_seen_ns;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics = vec![Metric::new(
            "icmp_type",
            f64::from(r.icmp_type.unwrap_or_default()),
        )];
        f.evidence.peers = vec![r.peer];
        f.evidence.names = vec![message.to_string()];
        out.push(f);
    }
}
