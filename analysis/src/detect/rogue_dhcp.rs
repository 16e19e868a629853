//! A device answering as a DHCP server: UDP from port 67 to port 68 (DHCPv4 offer, ack) or from
//! 547 to 546 (DHCPv6 advertise, reply). Medical devices are DHCP clients; one that answers can
//! hand the devices of its VLAN a gateway or a DNS server of its choosing (adversary in the
//! middle, MITRE T1557.003). One answer is enough: raised at once.
//!
//! Only site devices are judged by default: the hospital's own servers and relays are hosts the
//! site does not list as devices. `servers` names the addresses allowed to answer, for a site
//! that lists its DHCP servers (any other host answering is then raised too).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use crate::{decode::proto, flow::FlowRecord};

/// A server answer cannot come from a DHCP client's stack; a capture that mislabels a relay
/// can look the same.
const CONFIDENCE: f64 = 0.9;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RogueDhcpConfig {
    /// The site's DHCP servers and relays (default none: only site devices are judged).
    pub servers: Vec<IpNet>,
}

pub struct RogueDhcp {
    cfg: RogueDhcpConfig,
}

impl RogueDhcp {
    pub fn new(cfg: RogueDhcpConfig) -> Self {
        RogueDhcp { cfg }
    }
}

/// The DHCP version whose server answer `r` is, if it is one the device sent.
fn server_answer(r: &FlowRecord) -> Option<&'static str> {
    if r.proto != proto::UDP || r.packets_out == 0 {
        return None;
    }
    match (r.device_port, r.peer_port) {
        (67, 68) => Some("dhcp"),
        (547, 546) => Some("dhcpv6"),
        _ => None,
    }
}

impl Detector for RogueDhcp {
    fn name(&self) -> &'static str {
        "rogue_dhcp"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        let Some(version) = server_answer(r) else {
            return;
        };
        let facts = ctx.facts(&r.device);
        let listed = self.cfg.servers.iter().any(|n| n.contains(&r.device_addr));
        let judged = facts.is_site_device() || !self.cfg.servers.is_empty();
        if listed || !judged {
            return;
        }
        let mut f = Finding::new(
            "rogue_dhcp",
            &r.device,
            r.first_seen_ns,
            Severity::High,
            CONFIDENCE,
            Technique::new(
                "T1557.003",
                "Adversary-in-the-Middle: DHCP Spoofing",
                Matrix::Enterprise,
            ),
        );
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} answered as a {} server (udp/{} to {}:{}): it can hand other devices a gateway or DNS server of its choosing",
            r.device.name,
            version.to_ascii_uppercase(),
            r.device_port,
            r.peer,
            r.peer_port
        );
        f.flows.push(FlowRef::from_opener(r));
        f.evidence.window_start_ns = r.first_seen_ns;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics = vec![Metric::new("server_packets", r.packets_out as f64)];
        f.evidence.ports = vec![r.device_port];
        f.evidence.peers = vec![r.peer];
        f.evidence.names = vec![version.to_string()];
        out.push(f);
    }
}
