//! The profile language: what one class of device may talk to. See device-profiles/README.md.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    desired::{Direction, Mode, Proto},
    diag::{Diagnostics, from_yaml_error},
    span::Located,
};

/// A device class.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Unique name, lowercase with dashes (`infusion-pump`).
    pub name: Located<String>,
    #[serde(default)]
    pub description: String,
    /// Vendors whose devices this class describes.
    #[serde(default)]
    pub vendors: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    /// Mode for devices that do not set one. Default `learn`.
    #[serde(default = "default_mode")]
    pub default_mode: Mode,
    /// What the gateway does for this class when it is unhealthy. Default `open`: a patient
    /// monitor must not be cut off because a gateway is degraded.
    #[serde(default)]
    pub fail_mode: FailMode,
    /// How readily the baseline raises anomalies. Default `medium`.
    #[serde(default)]
    pub baseline_sensitivity: Sensitivity,
    #[serde(default)]
    pub conntrack: Conntrack,
    /// The site group of resolvers whose answers teach this class's `dns:` peers their
    /// addresses. Default: the site group `dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_resolvers: Option<Located<String>>,
    /// Per-detector tuning for the class: a detector's count, or `off` (device-profiles/README.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detection: crate::detection::Written,
    /// Allowed flows. Anything else is denied (enforce) or reported (monitor).
    #[serde(default)]
    pub flows: Vec<Flow>,
}

fn default_mode() -> Mode {
    Mode::Learn
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    Low,
    #[default]
    Medium,
    High,
}

/// Conntrack idle timeouts in seconds, per protocol, the cap on tracked flows and the grace of
/// established flows when a new generation tightens the policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conntrack {
    #[serde(default = "default_tcp")]
    pub tcp_idle_s: u32,
    #[serde(default = "default_udp")]
    pub udp_idle_s: u32,
    #[serde(default = "default_icmp")]
    pub icmp_idle_s: u32,
    /// Flows one device of this class may have tracked (conntrack fairness: one device cannot
    /// push every other device's flows out of the gateway's table). A device over it has its
    /// new flows dropped (enforce) or passed untracked (learn, monitor), reported once.
    /// Default 8192; 0 means the default.
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
    /// Do-not-disrupt: how long a flow established under the previous generation keeps going
    /// when a new generation denies it (a removed peer, a narrowed port). `until_idle` (the
    /// default): until it idles out, at most `grace_max`; `0`: cut at once; a duration
    /// (`90s`, `10m`, `1h`, or seconds): at most that, never more than `grace_max`. Flows of a
    /// quarantined device are cut at once whatever this says; new flows follow the new
    /// generation at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Located<GraceValue>>,
    /// The longest grace (`90s`, `30m`, `2h`, or seconds; 1 s to 24 h). Default 30 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_max: Option<Located<GraceValue>>,
}

/// A grace setting as written: a number of seconds or a word (`until_idle`, `30m`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum GraceValue {
    Seconds(u64),
    Text(String),
}

/// Default longest grace (`Conntrack::grace_max`): 30 minutes.
pub const DEFAULT_GRACE_MAX_S: u32 = wardgate_common::DEFAULT_GRACE_S;
/// The longest `grace_max` accepted: a day.
pub const GRACE_MAX_LIMIT_S: u32 = 86_400;

/// A duration: seconds, or a number followed by `s`, `m` or `h`.
fn duration_s(v: &GraceValue) -> Option<u64> {
    match v {
        GraceValue::Seconds(n) => Some(*n),
        GraceValue::Text(t) => {
            let t = t.trim();
            let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
                Some((i, _)) => t.split_at(i),
                None => (t, "s"),
            };
            let n: u64 = num.parse().ok()?;
            let unit = match unit.trim() {
                "s" => 1,
                "m" => 60,
                "h" => 3_600,
                _ => return None,
            };
            n.checked_mul(unit)
        }
    }
}

impl Conntrack {
    /// The grace in seconds a device of this class gets (`DeviceInfo::grace_s`: 0 = none), or
    /// the setting that is wrong and why.
    pub fn grace_s(&self) -> Result<u32, (&Located<GraceValue>, String)> {
        let max = match &self.grace_max {
            None => DEFAULT_GRACE_MAX_S,
            Some(m) => match duration_s(&m.value) {
                Some(s) if (1..=u64::from(GRACE_MAX_LIMIT_S)).contains(&s) => s as u32,
                Some(_) => {
                    return Err((m, "grace_max must be between 1 second and 24h".to_string()));
                }
                None => {
                    return Err((
                        m,
                        "grace_max is not a duration (seconds, or a number and s, m or h)"
                            .to_string(),
                    ));
                }
            },
        };
        let Some(g) = &self.grace else {
            return Ok(max);
        };
        if matches!(&g.value, GraceValue::Text(t) if t.trim() == "until_idle") {
            return Ok(max);
        }
        match duration_s(&g.value) {
            Some(s) if s <= u64::from(max) => Ok(s as u32),
            Some(s) => Err((
                g,
                format!("grace of {s} s is longer than grace_max ({max} s)"),
            )),
            None => Err((
                g,
                "grace is `until_idle`, 0 or a duration (seconds, or a number and s, m or h)"
                    .to_string(),
            )),
        }
    }
}

/// Default cap on tracked flows per device (`Conntrack::max_flows`).
pub const DEFAULT_MAX_FLOWS: u32 = 8_192;

fn default_max_flows() -> u32 {
    DEFAULT_MAX_FLOWS
}

fn default_tcp() -> u32 {
    3600
}
fn default_udp() -> u32 {
    60
}
fn default_icmp() -> u32 {
    30
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack {
            tcp_idle_s: default_tcp(),
            udp_idle_s: default_udp(),
            icmp_idle_s: default_icmp(),
            max_flows: default_max_flows(),
            grace: None,
            grace_max: None,
        }
    }
}

/// One allowed flow.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Short description, reported with events (`dicom to pacs`).
    #[serde(default)]
    pub name: String,
    /// `from-device` (the device opens the flow) or `to-device`.
    pub direction: Direction,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or `any`.
    pub protocol: Located<Proto>,
    /// Peers: a CIDR or address, `group:NAME` (a site group), `same-profile`, `any`, or
    /// `dns:NAME` or `dns:*.SUFFIX` (the addresses the device's resolvers answer for it).
    pub peers: Vec<Located<String>>,
    /// Destination port of the flow's first packet: `104`, `"11112-11120"`, or a list of them.
    /// Only for tcp/udp; omitted = all ports.
    #[serde(default)]
    pub ports: Option<Located<Ports>>,
    /// Overrides the profile's conntrack idle timeout for this flow (seconds).
    #[serde(default)]
    pub idle_timeout_s: Option<Located<u32>>,
    /// Application rule (`dicom` AE titles, `hl7` MSH fields), enforced by the datapath at each
    /// admitted flow's first message; its flows' first payload bytes also go to the agent
    /// (`Rule::inspect`).
    #[serde(default)]
    pub app: Option<App>,
}

/// A port, a range, or a list of them. Numbers are read wide so 0 and > 65535 can be reported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Ports {
    One(i64),
    Text(String),
    List(Vec<PortItem>),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PortItem {
    One(i64),
    Text(String),
}

/// An application rule: the first message of every flow the profile's flow admits is checked
/// by the datapath against these lists (each a value or a list of values; an absent list is
/// not checked). A flow whose first message names a value outside a list is refused: the
/// client gets a TCP reset, the server never sees the message, and an alert is raised.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum App {
    /// DICOM: the association's A-ASSOCIATE-RQ.
    Dicom {
        /// AE titles the client may call from (1-16 printable ASCII characters, no `\`).
        #[serde(default)]
        calling_ae: Option<Located<Values>>,
        /// AE titles the client may call.
        #[serde(default)]
        called_ae: Option<Located<Values>>,
    },
    /// HL7 v2 over MLLP: the connection's first message's MSH segment.
    Hl7 {
        /// MSH-3, the whole field (`LAB` or `LAB^1.2.3^ISO`); at most 32 characters.
        #[serde(default)]
        sending_application: Option<Located<Values>>,
        /// MSH-4.
        #[serde(default)]
        sending_facility: Option<Located<Values>>,
        /// MSH-5.
        #[serde(default)]
        receiving_application: Option<Located<Values>>,
        /// MSH-9, its first two components (`ORU^R01`; `ACK` alone for a one-component type).
        #[serde(default)]
        message_type: Option<Located<Values>>,
    },
}

impl App {
    /// For people: `dicom calling_ae MODALITY1, CT_1; called_ae PACS` (lists not given left out).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: &Option<Located<Values>>| {
            if let Some(v) = v {
                parts.push(format!("{name} {}", v.value.list().join(", ")));
            }
        };
        let kind = match self {
            App::Dicom {
                calling_ae,
                called_ae,
            } => {
                add("calling_ae", calling_ae);
                add("called_ae", called_ae);
                "dicom"
            }
            App::Hl7 {
                sending_application,
                sending_facility,
                receiving_application,
                message_type,
            } => {
                add("sending_application", sending_application);
                add("sending_facility", sending_facility);
                add("receiving_application", receiving_application);
                add("message_type", message_type);
                "hl7"
            }
        };
        if parts.is_empty() {
            format!("{kind} (nothing checked)")
        } else {
            format!("{kind} {}", parts.join("; "))
        }
    }
}

/// One value or a list of them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    pub fn list(&self) -> Vec<String> {
        match self {
            Values::One(v) => vec![v.clone()],
            Values::Many(v) => v.clone(),
        }
    }
}

/// A peer, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Any,
    SameProfile,
    Group(String),
    Dns(String),
    Net(ipnet::IpNet),
}

impl Peer {
    pub fn parse(s: &str) -> Result<Peer, String> {
        let s = s.trim();
        Ok(match s {
            "any" => Peer::Any,
            "same-profile" => Peer::SameProfile,
            _ if s.starts_with("group:") => Peer::Group(s["group:".len()..].to_string()),
            _ if s.starts_with("dns:") => Peer::Dns(s["dns:".len()..].to_string()),
            _ => {
                if let Ok(net) = s.parse::<ipnet::IpNet>() {
                    if net.trunc() != net {
                        return Err(format!(
                            "`{s}` has host bits set (did you mean {}?)",
                            net.trunc()
                        ));
                    }
                    Peer::Net(net)
                } else if let Ok(ip) = s.parse::<std::net::IpAddr>() {
                    Peer::Net(ipnet::IpNet::from(ip))
                } else {
                    return Err(format!(
                        "`{s}` is not a peer: expected a CIDR, an address, group:NAME, dns:NAME, same-profile or any"
                    ));
                }
            }
        })
    }
}

impl Ports {
    /// Inclusive ranges, or the problems found.
    pub fn ranges(&self) -> Result<Vec<(u16, u16)>, Vec<String>> {
        let items: Vec<PortItem> = match self {
            Ports::One(n) => vec![PortItem::One(*n)],
            Ports::Text(t) => vec![PortItem::Text(t.clone())],
            Ports::List(l) => l.clone(),
        };
        let mut out = Vec::new();
        let mut errs = Vec::new();
        if items.is_empty() {
            errs.push("empty port list".to_string());
        }
        for it in items {
            match it {
                PortItem::One(n) => match port(n) {
                    Ok(p) => out.push((p, p)),
                    Err(e) => errs.push(e),
                },
                PortItem::Text(t) => {
                    let (lo, hi) = match t.split_once('-') {
                        Some((a, b)) => (a.trim(), b.trim()),
                        None => (t.trim(), t.trim()),
                    };
                    match (lo.parse::<i64>(), hi.parse::<i64>()) {
                        (Ok(a), Ok(b)) => match (port(a), port(b)) {
                            (Ok(a), Ok(b)) if a <= b => out.push((a, b)),
                            (Ok(a), Ok(b)) => errs.push(format!("range {a}-{b} is inverted")),
                            (Err(e), _) | (_, Err(e)) => errs.push(e),
                        },
                        _ => errs.push(format!("`{t}` is not a port or a range like 11112-11120")),
                    }
                }
            }
        }
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }
}

fn port(n: i64) -> Result<u16, String> {
    match n {
        1..=65535 => Ok(n as u16),
        0 => Err("port 0 is not a port".to_string()),
        _ => Err(format!("port {n} is out of range (1-65535)")),
    }
}

pub const PROFILE_KEYS: &[&str] = &[
    "name",
    "description",
    "vendors",
    "models",
    "default_mode",
    "fail_mode",
    "baseline_sensitivity",
    "detection",
    "conntrack",
    "flows",
    "direction",
    "protocol",
    "peers",
    "ports",
    "idle_timeout_s",
    "app",
    "tcp_idle_s",
    "udp_idle_s",
    "icmp_idle_s",
    "max_flows",
    "grace",
    "grace_max",
    "calling_ae",
    "called_ae",
    "sending_application",
    "sending_facility",
    "receiving_application",
    "message_type",
];

/// Parses one profile file. `file` is the name used in messages. Syntax errors, unknown keys
/// and wrong types stop parsing of that file (serde reads in one pass); everything else is
/// reported together by [`crate::validate`].
pub fn parse_profile(file: &str, text: &str) -> Result<Profile, Diagnostics> {
    serde_saphyr::from_str::<Profile>(text)
        .map_err(|e| Diagnostics(vec![from_yaml_error(file, &e, PROFILE_KEYS)]))
}

/// All profiles, by name, with the file each came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileSet {
    pub profiles: BTreeMap<String, (String, Profile)>,
}

impl ProfileSet {
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name).map(|(_, p)| p)
    }

    pub fn file_of(&self, name: &str) -> &str {
        self.profiles
            .get(name)
            .map_or("<profile>", |(f, _)| f.as_str())
    }

    /// Adds a profile; a second profile with the same name is a diagnostic.
    pub fn insert(&mut self, file: &str, profile: Profile, diags: &mut Diagnostics) {
        let name = profile.name.value.clone();
        if let Some((other, _)) = self.profiles.get(&name) {
            diags.at(
                file,
                &profile.name,
                format!("profile `{name}` is already defined in {other}"),
                Some("profile names must be unique".to_string()),
            );
            return;
        }
        self.profiles.insert(name, (file.to_string(), profile));
    }

    /// Loads every `*.yaml`/`*.yml` file directly in `dir` (sites/ and other folders skipped),
    /// collecting the problems of all files.
    pub fn load_dir(dir: &std::path::Path) -> Result<ProfileSet, Diagnostics> {
        Self::load_paths(&[dir])
    }

    /// Loads profile files and directories (each directory as [`ProfileSet::load_dir`] reads
    /// it), collecting the problems of all of them; a name defined twice is a problem.
    pub fn load_paths<P: AsRef<std::path::Path>>(paths: &[P]) -> Result<ProfileSet, Diagnostics> {
        let mut set = ProfileSet::default();
        let mut diags = Diagnostics::default();
        for path in paths {
            let path = path.as_ref();
            if path.is_dir() {
                set.load_dir_into(path, &mut diags);
            } else {
                set.load_file(path, &mut diags);
            }
        }
        diags.into_result(set)
    }

    fn load_dir_into(&mut self, dir: &std::path::Path, diags: &mut Diagnostics) {
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => {
                diags.push(
                    &dir.display().to_string(),
                    0,
                    0,
                    format!("cannot read directory: {e}"),
                    None,
                );
                return;
            }
        };
        files.sort();
        for path in files {
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if path.is_file() && is_yaml {
                self.load_file(&path, diags);
            }
        }
    }

    fn load_file(&mut self, path: &std::path::Path, diags: &mut Diagnostics) {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match parse_profile(&file, &text) {
                Ok(p) => {
                    diags.extend(crate::validate::validate_profile(&file, &p));
                    self.insert(&file, p, diags);
                }
                Err(d) => diags.extend(d),
            },
            Err(e) => diags.push(&file, 0, 0, format!("cannot read: {e}"), None),
        }
    }
}
