//! Protocols a device's class never uses: Windows file sharing, remote desktop, telnet and
//! directory services from an infusion pump or a monitor are lateral movement, not clinical
//! traffic. A default list applies to every class the site assigns, except classes that are
//! Windows servers by nature (PACS, interface engines, RIS); a class may have its own list.
//! Devices without a class (found in a capture without a site) are not checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Context, Detector, Observation,
    finding::{Finding, FlowRef, Matrix, Metric, Severity, Technique},
};
use crate::{
    decode::proto,
    flow::{FlowDirection, FlowRecord, TcpOutcome},
};

/// One forbidden service: a name, an IP protocol and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub ports: Vec<u16>,
}

fn svc(name: &str, protocol: &str, ports: &[u16]) -> Service {
    Service {
        name: name.into(),
        protocol: protocol.into(),
        ports: ports.to_vec(),
    }
}

/// The default for medical device classes.
pub fn medical_default() -> Vec<Service> {
    vec![
        svc("smb", "tcp", &[445]),
        svc("netbios", "tcp", &[139]),
        svc("netbios", "udp", &[137, 138]),
        svc("msrpc", "tcp", &[135]),
        svc("rdp", "tcp", &[3389]),
        svc("rdp", "udp", &[3389]),
        svc("telnet", "tcp", &[23]),
        svc("kerberos", "tcp", &[88]),
        svc("kerberos", "udp", &[88]),
        svc("ldap", "tcp", &[389, 636, 3268, 3269]),
        svc("ldap", "udp", &[389]),
        svc("winrm", "tcp", &[5985, 5986]),
    ]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassProtocolConfig {
    /// Forbidden for every class not listed in `classes` or `exempt` (default: SMB 445, NetBIOS
    /// 137-139, MS-RPC 135, RDP 3389, telnet 23, Kerberos 88, LDAP 389/636/3268/3269, WinRM
    /// 5985/5986).
    pub default: Vec<Service>,
    /// A class's own list, replacing the default.
    pub classes: BTreeMap<String, Vec<Service>>,
    /// Classes not checked (default: pacs, hl7-interface-engine, ris-worklist).
    pub exempt: Vec<String>,
}

impl Default for ClassProtocolConfig {
    fn default() -> Self {
        ClassProtocolConfig {
            default: medical_default(),
            classes: BTreeMap::new(),
            exempt: vec![
                "pacs".into(),
                "hl7-interface-engine".into(),
                "ris-worklist".into(),
            ],
        }
    }
}

impl ClassProtocolConfig {
    /// The forbidden list for a class, if it is checked.
    pub fn for_class(&self, class: &str) -> Option<&[Service]> {
        if self.exempt.iter().any(|c| c == class) {
            return None;
        }
        Some(self.classes.get(class).unwrap_or(&self.default))
    }
}

pub struct ClassProtocol {
    cfg: ClassProtocolConfig,
}

impl ClassProtocol {
    pub fn new(cfg: ClassProtocolConfig) -> Self {
        ClassProtocol { cfg }
    }
}

/// The device opened the flow, or answered it (it serves the protocol).
fn involved(r: &FlowRecord) -> bool {
    match r.direction {
        FlowDirection::Opened => true,
        FlowDirection::Received => match r.proto {
            proto::TCP => r.tcp == Some(TcpOutcome::Established) && r.packets_out > 0,
            _ => r.packets_out > 0,
        },
    }
}

impl Detector for ClassProtocol {
    fn name(&self) -> &'static str {
        "class_protocol"
    }

    fn observe(&mut self, obs: &Observation<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Observation::Flow(r) = obs else { return };
        // A NetBIOS name query or DHCP broadcast is a stack's habit, not a use of the service.
        if super::is_group_address(r.peer) {
            return;
        }
        let facts = ctx.facts(&r.device);
        let Some(class) = facts.class.as_deref() else {
            return;
        };
        let Some(list) = self.cfg.for_class(class) else {
            return;
        };
        let pname = match r.proto {
            proto::TCP => "tcp",
            proto::UDP => "udp",
            _ => return,
        };
        let Some(s) = list
            .iter()
            .find(|s| s.protocol == pname && s.ports.contains(&r.port))
        else {
            return;
        };
        if !involved(r) {
            return;
        }
        let answered = r.packets_in > 0 && r.tcp != Some(TcpOutcome::Refused);
        let verb = match r.direction {
            FlowDirection::Opened => "opened",
            FlowDirection::Received => "served",
        };
        let mut f = Finding::new(
            self.name(),
            &r.device,
            r.first_seen_ns,
            if answered {
                Severity::High
            } else {
                Severity::Medium
            },
            0.9,
            Technique::new("T0886", "Remote Services", Matrix::Ics),
        );
        f.peer = Some(r.peer);
        f.summary = format!(
            "{} ({class}) {verb} {} ({pname}/{}) with {}: its class never uses it",
            r.device.name, s.name, r.port, r.peer
        );
        f.flows.push(FlowRef::from(*r));
        f.evidence.window_start_ns = r.first_seen_ns;
        f.evidence.window_end_ns = r.last_seen_ns;
        f.evidence.metrics = vec![
            Metric::new("flows", 1.0).threshold(1.0),
            Metric::new("bytes", r.bytes() as f64),
        ];
        f.evidence.ports = vec![r.port];
        f.evidence.peers = vec![r.peer];
        f.evidence.names = vec![s.name.clone()];
        out.push(f);
    }
}
