//! The desired state of one gateway: what the compiler produces and the agent writes into BPF maps.
//!
//! It carries both the logical policy (devices, rules, for people and for explaining events) and
//! its lowering to map-level entries (`peers`, `ports`, see [`crate::lower`]). The agent adds only
//! the slot byte and the byte-order conversion; everything else is decided here, without I/O.

use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Per-device enforcement mode.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Pass everything, report new flows. New devices start here.
    Learn,
    /// Pass everything, report what the policy would deny.
    Monitor,
    /// Drop what the policy does not allow, report it.
    Enforce,
    /// Drop everything but the gateway's management allowlist.
    Quarantine,
}

/// A mode name that is none of learn, monitor, enforce, quarantine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mode `{0}` is not one of learn, monitor, enforce, quarantine")]
pub struct UnknownMode(pub String);

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Learn, Mode::Monitor, Mode::Enforce, Mode::Quarantine];

    /// The mode's name in files, the store, alerts and the API (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
            Mode::Quarantine => "quarantine",
        }
    }

    pub fn as_datapath(self) -> u32 {
        use wardgate_common as c;
        match self {
            Mode::Learn => c::MODE_LEARN,
            Mode::Monitor => c::MODE_MONITOR,
            Mode::Enforce => c::MODE_ENFORCE,
            Mode::Quarantine => c::MODE_QUARANTINE,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// Which way a rule looks: flows the device opens, or flows opened towards the device.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    FromDevice,
    ToDevice,
}

impl Direction {
    pub fn as_datapath(self) -> u8 {
        match self {
            Direction::FromDevice => wardgate_common::DIR_FROM_DEVICE,
            Direction::ToDevice => wardgate_common::DIR_TO_DEVICE,
        }
    }
}

/// IP protocol of a rule. `Any` matches every protocol and every port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    /// IP protocol number, `None` for `Any`.
    pub fn number(self) -> Option<u8> {
        use wardgate_common as c;
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(c::PROTO_TCP),
            Proto::Udp => Some(c::PROTO_UDP),
            Proto::Icmp => Some(c::PROTO_ICMP),
            Proto::Icmpv6 => Some(c::PROTO_ICMPV6),
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// Inclusive port range; a single port has `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "`{s}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
            ));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(format!(
                    "`{s}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
                ));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| format!("`{s}` is not a MAC address (bad hex `{p}`)"))?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One allow rule, after names (groups, same-profile) were resolved to CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// Unique within a desired state; reported in events.
    pub rule_id: u32,
    /// Where the rule comes from, for people: `infusion-pump#2 (dicom to pacs)`.
    pub name: String,
    pub direction: Direction,
    pub proto: Proto,
    pub peers: Vec<IpNet>,
    /// Destination port of the flow's first packet (the service port); `None` = all ports.
    pub ports: Option<PortRange>,
    /// Conntrack idle timeout in seconds for flows this rule allows.
    pub idle_timeout_s: u32,
    /// The profile's flow carries an app constraint (DICOM or HL7): the datapath hands the
    /// agent the first payload bytes of the flows this rule admits. Absent in older bundles.
    #[serde(default)]
    pub inspect: bool,
    /// The application rule the datapath enforces at the first message of each flow this rule
    /// admits (`inspect` is then set too). Absent in older bundles: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRule>,
}

/// Bytes of an HL7 value the datapath compares (AE titles: 16).
pub const APP_VALUE_LEN: usize = wardgate_common::APP_VALUE_LEN;

/// A compiled application rule: allowed values per field; an empty list is not checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AppRule {
    Dicom {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calling_ae: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        called_ae: Vec<String>,
    },
    Hl7 {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sending_application: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sending_facility: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        receiving_application: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        message_type: Vec<String>,
    },
}

impl AppRule {
    /// Whether any field is checked (a rule with no list checks nothing).
    pub fn checks(&self) -> bool {
        match self {
            AppRule::Dicom {
                calling_ae,
                called_ae,
            } => !calling_ae.is_empty() || !called_ae.is_empty(),
            AppRule::Hl7 {
                sending_application,
                sending_facility,
                receiving_application,
                message_type,
            } => {
                !sending_application.is_empty()
                    || !sending_facility.is_empty()
                    || !receiving_application.is_empty()
                    || !message_type.is_empty()
            }
        }
    }

    /// Whether a first message with these fields passes (the datapath's decision, for
    /// `simulate`): DICOM (calling, called) AE titles, compared without their padding.
    pub fn allows_dicom(&self, calling: &str, called: &str) -> bool {
        match self {
            AppRule::Dicom {
                calling_ae,
                called_ae,
            } => {
                let ok = |l: &[String], v: &str| l.is_empty() || l.iter().any(|a| a == v.trim());
                ok(calling_ae, calling) && ok(called_ae, called)
            }
            AppRule::Hl7 { .. } => false,
        }
    }

    /// As [`AppRule::allows_dicom`] for HL7: MSH-3, MSH-4, MSH-5 and MSH-9 (its first two
    /// components are compared).
    pub fn allows_hl7(&self, msh3: &str, msh4: &str, msh5: &str, msh9: &str) -> bool {
        match self {
            AppRule::Hl7 {
                sending_application,
                sending_facility,
                receiving_application,
                message_type,
            } => {
                let ok = |l: &[String], v: &str| l.is_empty() || l.iter().any(|a| a == v);
                let msh9: String = msh9.split('^').take(2).collect::<Vec<_>>().join("^");
                ok(sending_application, msh3)
                    && ok(sending_facility, msh4)
                    && ok(receiving_application, msh5)
                    && ok(message_type, &msh9)
            }
            AppRule::Dicom { .. } => false,
        }
    }
}

/// The compiled rules of one profile on one gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub policy_id: u32,
    pub profile: String,
    /// The version of the profile compiled (the controller's profile version; 0 offline).
    #[serde(default)]
    pub profile_version: u32,
    pub rules: Vec<Rule>,
    /// The profile's `baseline_sensitivity`: the agent's detectors scale their counts by it.
    /// Absent in older bundles: medium.
    #[serde(default)]
    pub sensitivity: crate::profile::Sensitivity,
    /// The profile's `detection:` tuning for the agent's detectors. Absent in older bundles.
    #[serde(
        default,
        skip_serializing_if = "crate::detection::ClassDetection::is_empty"
    )]
    pub detection: crate::detection::ClassDetection,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub device_id: u32,
    pub name: String,
    pub addrs: Vec<IpAddr>,
    pub mac: MacAddr,
    pub policy_id: u32,
    pub mode: Mode,
    /// Cap on the device's tracked flows (its profile's `conntrack.max_flows`; 0 = the
    /// datapath default).
    #[serde(default)]
    pub max_flows: u32,
    /// The profile fails open: while the gateway's agent is unhealthy (stale heartbeat) the
    /// device is monitored instead of enforced. Absent in older bundles: fail closed.
    #[serde(default)]
    pub fail_open: bool,
    /// Do-not-disrupt: seconds a flow established under an earlier generation keeps going once
    /// a new one denies it (its profile's `conntrack.grace`, at most `grace_max`; 0 = cut at
    /// once). Absent in older bundles: the default, until idle at most 30 minutes.
    #[serde(default = "default_grace_s")]
    pub grace_s: u32,
}

fn default_grace_s() -> u32 {
    crate::profile::DEFAULT_GRACE_MAX_S
}

/// Map-level: (policy, direction, peer prefix) -> peer set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerEntry {
    pub policy_id: u32,
    pub direction: Direction,
    pub cidr: IpNet,
    pub peer_set: u32,
}

/// A port prefix: the top `len` bits of `value` are matched (len 16 = one port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortPrefix {
    pub value: u16,
    pub len: u8,
}

/// Map-level: (peer set, protocol or any, port prefix or any) -> rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortEntry {
    pub peer_set: u32,
    /// IP protocol number; `None` matches every protocol (and then `port` is `None`).
    pub proto: Option<u8>,
    pub port: Option<PortPrefix>,
    pub rule_id: u32,
    pub idle_timeout_s: u32,
    /// The rule's flows are inspected (`Rule::inspect`).
    #[serde(default)]
    pub inspect: bool,
}

/// Everything one gateway enforces, at one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub gateway: String,
    pub generation: u32,
    /// The controller store this generation came from (a random id made when the store was
    /// created): generation numbers are only comparable within one epoch. Empty when compiled
    /// offline; set on the way to an agent, never part of what is compiled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// SHA-256 (hex) of the generation as the controller stores it: two generations with the
    /// same number and epoch but different content (a store restored from a backup that then
    /// diverged) are told apart by it. Empty offline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    pub devices: Vec<DeviceEntry>,
    pub policies: Vec<PolicyEntry>,
    pub peers: Vec<PeerEntry>,
    pub ports: Vec<PortEntry>,
    /// The site's groups (name -> CIDRs): the agent's detectors tell inside peers from outside
    /// ones and read baselines kept by group. Not enforced (rules hold resolved CIDRs). Absent
    /// in older bundles.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub groups: std::collections::BTreeMap<String, Vec<IpNet>>,
    /// `dns:` peers: each policy's resolvers and names (`crate::dns`). Absent in older
    /// bundles: none.
    #[serde(default, skip_serializing_if = "crate::dns::DnsRules::is_empty")]
    pub dns: crate::dns::DnsRules,
}

impl DesiredState {
    /// Reads a desired state from JSON (the format the controller pushes and the agent caches).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("desired state always serializes")
    }

    pub fn rule(&self, rule_id: u32) -> Option<(&PolicyEntry, &Rule)> {
        self.policies.iter().find_map(|p| {
            p.rules
                .iter()
                .find(|r| r.rule_id == rule_id)
                .map(|r| (p, r))
        })
    }

    pub fn device(&self, device_id: u32) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip_and_match_serde() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(
            "Enforce".parse::<Mode>().unwrap_err().to_string(),
            "mode `Enforce` is not one of learn, monitor, enforce, quarantine"
        );
    }
}
