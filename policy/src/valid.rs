//! A validated site: what [`crate::validate::validate_site`] returns when a site and its
//! profiles have no problem. Every field is typed (MACs, addresses, CIDRs, modes, port ranges,
//! peers with their groups resolved, flow keys), so the compiler reads it without parsing or
//! looking anything up and cannot fail on it; only what validation cannot know (the gateway
//! asked for, stable ids, map capacity) is still an error there.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use crate::{
    desired::{Direction, MacAddr, Mode, PortRange, Proto},
    profile::{App, Conntrack, FailMode},
    span::Located,
};

/// Only validation makes one (the fields are read through methods), so whatever holds a
/// `ValidSite` holds what validation checked: unique device names, ids, MACs and addresses,
/// known profiles, gateways and groups.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSite {
    pub(crate) name: String,
    pub(crate) groups: BTreeMap<String, Vec<IpNet>>,
    pub(crate) gateways: Vec<ValidGateway>,
    pub(crate) devices: Vec<ValidDevice>,
    pub(crate) profiles: BTreeMap<String, ValidProfile>,
}

impl ValidSite {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Group name -> CIDRs.
    pub fn groups(&self) -> &BTreeMap<String, Vec<IpNet>> {
        &self.groups
    }

    pub fn gateways(&self) -> &[ValidGateway] {
        &self.gateways
    }

    /// In site order.
    pub fn devices(&self) -> &[ValidDevice] {
        &self.devices
    }

    /// Every profile, used or not, by name.
    pub fn profiles(&self) -> &BTreeMap<String, ValidProfile> {
        &self.profiles
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidGateway {
    pub name: String,
    pub interfaces: Vec<String>,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidDevice {
    /// The site's `id`, or the 1-based position in the site file.
    pub id: u32,
    pub name: String,
    pub mac: MacAddr,
    pub addresses: Vec<IpAddr>,
    pub profile: String,
    /// The device's mode, or its profile's `default_mode`.
    pub mode: Mode,
    /// From the profile: `conntrack.max_flows` and `fail_mode: open`.
    pub max_flows: u32,
    pub fail_open: bool,
    /// From the profile: `conntrack.grace` within `grace_max`, in seconds (0 = none).
    pub grace_s: u32,
    pub gateway: String,
    pub location: String,
    pub asset_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidProfile {
    pub name: String,
    /// The file it came from, for messages.
    pub file: String,
    pub default_mode: Mode,
    pub fail_mode: FailMode,
    pub conntrack: Conntrack,
    /// How sensitive the anomaly detectors are for the class (`baseline_sensitivity`).
    pub sensitivity: crate::profile::Sensitivity,
    /// The class's detector tuning (`detection:`).
    pub detection: crate::detection::ClassDetection,
    pub flows: Vec<ValidFlow>,
    /// The resolvers `dns:` peers learn from (the profile's `dns_resolvers` group or the
    /// site's `dns`); empty when the profile names no `dns:` peer.
    pub resolvers: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidFlow {
    /// What the flow's stable rule id is kept under (see [`crate::ids::flow_keys`]).
    pub key: String,
    /// The rule name: the flow's name, or `profile#N`.
    pub name: String,
    pub direction: Direction,
    pub proto: Proto,
    pub peers: Vec<ValidPeer>,
    /// Empty = all ports (always empty unless the protocol is tcp, udp or any).
    pub ports: Vec<PortRange>,
    /// The flow's idle timeout, or the profile's for its protocol.
    pub idle_timeout_s: u32,
    pub app: Option<App>,
}

/// A peer with its group resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidPeer {
    Any,
    SameProfile,
    Net(IpNet),
    Group {
        name: String,
        nets: Vec<IpNet>,
    },
    /// A name (or `*.suffix`) whose addresses the device's resolvers answer (`crate::dns`).
    Dns(String),
}

impl ValidPeer {
    /// Every IPv4 and every IPv6 address.
    pub fn any_nets() -> [IpNet; 2] {
        [IpNet::V4(Default::default()), IpNet::V6(Default::default())]
    }
}

/// A device as validation reads it: the parsed fields keep their parse error (the text that
/// failed) and position, so a site file's devices and the controller's typed rows go through
/// the same checks and give the same messages.
#[derive(Clone, Debug)]
pub struct DeviceInput {
    pub id: u32,
    pub name: Located<String>,
    pub mac: Located<Result<MacAddr, String>>,
    /// `Err` holds the text that is not an address.
    pub addresses: Vec<Located<Result<IpAddr, String>>>,
    pub profile: Located<String>,
    pub mode: Option<Mode>,
    pub gateway: Located<String>,
    pub location: String,
    pub asset_id: String,
}

impl DeviceInput {
    /// A site file's device at `index` (its id defaults to the 1-based position).
    pub fn parse(index: usize, d: &crate::site::Device) -> Self {
        DeviceInput {
            id: d.id.unwrap_or(index as u32 + 1),
            name: d.name.clone(),
            mac: Located::at(d.mac.value.parse::<MacAddr>(), d.mac.line, d.mac.column),
            addresses: d
                .addresses
                .iter()
                .map(|a| {
                    let ip = a.value.trim().parse::<IpAddr>();
                    Located::at(ip.map_err(|_| a.value.clone()), a.line, a.column)
                })
                .collect(),
            profile: d.profile.clone(),
            mode: d.mode,
            gateway: d.gateway.clone(),
            location: d.location.clone(),
            asset_id: d.asset_id.clone(),
        }
    }
}
