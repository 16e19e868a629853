//! The one finding (alert) type every detector raises: who, what, how sure, which ATT&CK
//! technique, the evidence next to the baseline, and what to do. A plain serde struct so the
//! control plane can convert it into its own alert type.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::flow::{DeviceRef, FlowDirection, FlowRecord};

/// How bad it is if true. Ordered; maps onto OCSF `severity_id` 1-5 and CEF 0-10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// A severity name that is none of info, low, medium, high, critical.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("severity `{0}` is not one of info, low, medium, high, critical")]
pub struct UnknownSeverity(pub String);

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The severity's name in alerts, the API and metrics (as serde writes it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Order for alert filters, storage and which alerts a full queue drops first: 0 (info
    /// and low) to 3 (critical).
    pub const fn rank(self) -> u8 {
        match self {
            Severity::Info | Severity::Low => 0,
            Severity::Medium => 1,
            Severity::High => 2,
            Severity::Critical => 3,
        }
    }

    /// OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical.
    pub fn ocsf_id(self) -> u8 {
        self as u8 + 1
    }
    /// CEF severity 0-10.
    pub fn cef(self) -> u8 {
        match self {
            Severity::Info => 1,
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 8,
            Severity::Critical => 10,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownSeverity(s.to_string()))
    }
}

/// The ATT&CK matrix a technique belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matrix {
    Enterprise,
    Ics,
}

/// A MITRE ATT&CK technique.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Technique {
    pub id: String,
    pub name: String,
    pub matrix: Matrix,
}

impl Technique {
    pub fn new(id: &str, name: &str, matrix: Matrix) -> Technique {
        Technique {
            id: id.into(),
            name: name.into(),
            matrix,
        }
    }
    /// The technique's page on attack.mitre.org.
    pub fn url(&self) -> String {
        format!("https://attack.mitre.org/techniques/{}/", self.id)
    }
    /// The ATT&CK tactic the technique serves, as OCSF's `attacks[].tactic` names it.
    /// The technique's tactic in its own matrix: ICS techniques (T08xx) belong to the ICS
    /// matrix's tactics (TA01xx), Enterprise ones to Enterprise's (TA00xx).
    pub fn tactic(&self) -> (&'static str, &'static str) {
        match self.id.as_str() {
            // Enterprise.
            "T1046" | "T1018" => ("TA0007", "Discovery"),
            "T1021" => ("TA0008", "Lateral Movement"),
            "T1071" | "T1071.004" | "T1568.002" => ("TA0011", "Command and Control"),
            "T1498" => ("TA0040", "Impact"),
            "T1557.002" | "T1557.003" | "T1557" | "T1110" => ("TA0006", "Credential Access"),
            "T1041" | "T1030" => ("TA0010", "Exfiltration"),
            // ICS: Remote System Discovery, Network Connection Enumeration.
            "T0846" | "T0840" => ("TA0102", "Discovery"),
            // ICS: Remote Services, Exploitation of Remote Services.
            "T0886" | "T0866" => ("TA0109", "Lateral Movement"),
            // ICS: Standard Application Layer Protocol, Commonly Used Port.
            "T0869" | "T0885" => ("TA0101", "Command and Control"),
            // ICS: Denial of Service.
            "T0814" => ("TA0107", "Inhibit Response Function"),
            // ICS: Denial of Control.
            "T0813" => ("TA0105", "Impact"),
            // ICS: Adversary-in-the-Middle.
            "T0830" => ("TA0100", "Collection"),
            _ => ("", ""),
        }
    }
}

/// One flow a finding rests on (the first few are kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRef {
    pub direction: FlowDirection,
    pub device_addr: IpAddr,
    pub device_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
    pub proto: u8,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl FlowRef {
    /// The flow as its opener saw it: for a flow the device received, the peer is the `device`
    /// end and the direction `Opened` (findings whose subject is the peer that opened it: a
    /// host scanning devices).
    pub fn from_opener(r: &FlowRecord) -> FlowRef {
        let f = FlowRef::from(r);
        match r.direction {
            FlowDirection::Opened => f,
            FlowDirection::Received => FlowRef {
                direction: FlowDirection::Opened,
                device_addr: r.peer,
                device_port: r.peer_port,
                peer: r.device_addr,
                peer_port: r.device_port,
                ..f
            },
        }
    }
}

impl From<&FlowRecord> for FlowRef {
    fn from(r: &FlowRecord) -> FlowRef {
        FlowRef {
            direction: r.direction,
            device_addr: r.device_addr,
            device_port: r.device_port,
            peer: r.peer,
            peer_port: r.peer_port,
            proto: r.proto,
            first_seen_ns: r.first_seen_ns,
            last_seen_ns: r.last_seen_ns,
            packets: r.packets(),
            bytes: r.bytes(),
        }
    }
}

/// One measured quantity: what was observed, what the baseline says, where the line was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `distinct_ports`, `failed_first_contacts`, `bytes_per_hour`, `interval_s` ...
    pub name: String,
    pub observed: f64,
    /// The device's own normal (baseline median), when a baseline is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Its spread (MAD), when a baseline is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_spread: Option<f64>,
    /// The value at which the detector fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Metric {
    pub fn new(name: &str, observed: f64) -> Metric {
        Metric {
            name: name.into(),
            observed,
            baseline: None,
            baseline_spread: None,
            threshold: None,
        }
    }
    pub fn threshold(mut self, t: f64) -> Metric {
        self.threshold = Some(t);
        self
    }
    pub fn baseline(mut self, median: f64, spread: f64) -> Metric {
        self.baseline = Some(median);
        self.baseline_spread = Some(spread);
        self
    }
}

/// What the detector saw: the window, the numbers, the ports and peers touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The span the numbers cover (capture or wall time).
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub metrics: Vec<Metric>,
    /// Ports touched (sorted, at most `MAX_LISTED`; the metric holds the full count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Peers touched (at most `MAX_LISTED`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<IpAddr>,
    /// Protocol or application names involved (`smb`, `dicom CT1 -> PACS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Ports, peers and flows listed in one finding at most.
pub const MAX_LISTED: usize = 64;
/// Flows attached to one finding at most.
pub const MAX_FLOWS: usize = 8;

/// One alert. Detectors fill the detection fields; the engine fills the device context (class,
/// location, asset id) and the aggregator the id, count and first/last seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Unique within the producer (the aggregator assigns it); the controller may re-key it.
    pub id: String,
    /// When it was last raised (capture time offline), ns since the Unix epoch.
    pub time_ns: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Raw detections merged into this finding.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub device: DeviceRef,
    /// The device's class (profile name), from the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// The policy rule and generation involved (live deny-driven findings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// The rule's name, from that generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    /// The device's mode then (`learn`, `monitor`, `enforce`, `quarantine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The detector's name (`scan_vertical`, `class_protocol`, ...).
    pub detector: String,
    pub severity: Severity,
    /// 0.0-1.0: how likely the finding is a true positive given the evidence.
    pub confidence: f64,
    pub technique: Technique,
    /// The peer the finding is about (the aggregation key's third part), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    /// One line for humans.
    pub summary: String,
    pub flows: Vec<FlowRef>,
    pub evidence: Evidence,
    /// What an operator can do now (`wardctl mode NAME quarantine`).
    pub action: String,
}

impl Finding {
    /// A finding with the detection fields set and the rest empty, for detectors to fill.
    pub fn new(
        detector: &str,
        device: &DeviceRef,
        time_ns: u64,
        severity: Severity,
        confidence: f64,
        technique: Technique,
    ) -> Finding {
        Finding {
            id: String::new(),
            time_ns,
            first_seen_ns: time_ns,
            last_seen_ns: time_ns,
            count: 1,
            gateway: None,
            device: device.clone(),
            class: None,
            profile_version: None,
            location: None,
            asset_id: None,
            rule: None,
            generation: None,
            rule_name: None,
            mode: None,
            detector: detector.into(),
            severity,
            confidence: confidence.clamp(0.0, 1.0),
            technique,
            peer: None,
            summary: String::new(),
            flows: Vec::new(),
            evidence: Evidence::default(),
            action: quarantine_action(&device.name),
        }
    }
}

/// The detectors of datapath events: the datapath reports them, the agent names them from the
/// generation that produced them, and they travel as findings like any detector's. `kind` is
/// the event kind the protobuf `Alert.kind` carries (every other detector is `anomaly`).
pub mod datapath {
    pub const DENY: &str = "datapath_deny";
    pub const WOULD_DENY: &str = "datapath_would_deny";
    /// The same detector as the ARP/ND claim detector: an address used with another MAC.
    pub const SPOOF: &str = "spoof";
    pub const UNKNOWN_DEVICE: &str = "datapath_unknown_device";
    pub const NEW_ADDRESS: &str = "datapath_new_address";
    pub const FLOW_CAP: &str = "datapath_flow_cap";
    pub const WATCHDOG: &str = "datapath_watchdog";
    /// An application rule (DICOM AE titles, HL7 MSH fields) refused a flow.
    pub const APP_REFUSED: &str = "datapath_app_refused";

    /// A datapath event kind, as the protobuf `Alert.kind` carries it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Kind {
        Deny,
        WouldDeny,
        Spoof,
        UnknownDevice,
        NewAddress,
        FlowCap,
        Watchdog,
        AppRefused,
    }

    /// An alert kind that is no datapath event kind.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    #[error("`{0}` is not a datapath event kind")]
    pub struct UnknownKind(pub String);

    /// The kind of every finding not raised by the datapath.
    pub const ANOMALY: &str = "anomaly";

    impl Kind {
        pub const ALL: [Kind; 8] = [
            Kind::Deny,
            Kind::WouldDeny,
            Kind::Spoof,
            Kind::UnknownDevice,
            Kind::NewAddress,
            Kind::FlowCap,
            Kind::Watchdog,
            Kind::AppRefused,
        ];

        pub const fn as_str(self) -> &'static str {
            match self {
                Kind::Deny => "deny",
                Kind::WouldDeny => "would_deny",
                Kind::Spoof => "spoof",
                Kind::UnknownDevice => "unknown_device",
                Kind::NewAddress => "new_address",
                Kind::FlowCap => "flow_cap",
                Kind::Watchdog => "watchdog",
                Kind::AppRefused => "app_refused",
            }
        }

        /// The detector its findings carry.
        pub const fn detector(self) -> &'static str {
            match self {
                Kind::Deny => DENY,
                Kind::WouldDeny => WOULD_DENY,
                Kind::Spoof => SPOOF,
                Kind::UnknownDevice => UNKNOWN_DEVICE,
                Kind::NewAddress => NEW_ADDRESS,
                Kind::FlowCap => FLOW_CAP,
                Kind::Watchdog => WATCHDOG,
                Kind::AppRefused => APP_REFUSED,
            }
        }

        /// The kind whose findings carry `detector`, if it is a datapath detector.
        pub fn of_detector(detector: &str) -> Option<Kind> {
            Kind::ALL.into_iter().find(|k| k.detector() == detector)
        }
    }

    impl std::fmt::Display for Kind {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    impl std::str::FromStr for Kind {
        type Err = UnknownKind;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            Kind::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| UnknownKind(s.to_string()))
        }
    }

    /// The alert kind of a detector's findings.
    pub fn kind(detector: &str) -> &'static str {
        Kind::of_detector(detector).map_or(ANOMALY, Kind::as_str)
    }

    /// The detector of a datapath event kind, if it is one.
    pub fn detector(kind: &str) -> Option<&'static str> {
        kind.parse::<Kind>().ok().map(Kind::detector)
    }
}

/// The suggested action for a device acting against its class.
pub fn quarantine_action(device: &str) -> String {
    format!("wardctl mode {device} quarantine")
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn severity_names_round_trip_and_match_serde() {
        for s in Severity::ALL {
            assert_eq!(s.to_string().parse::<Severity>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "urgent".parse::<Severity>().unwrap_err().to_string(),
            "severity `urgent` is not one of info, low, medium, high, critical"
        );
        assert_eq!(Severity::Info.rank(), Severity::Low.rank());
        assert_eq!(Severity::Critical.rank(), 3);
    }

    #[test]
    fn datapath_kinds_round_trip_to_their_detectors() {
        use datapath::Kind;
        for k in Kind::ALL {
            assert_eq!(k.to_string().parse::<Kind>(), Ok(k));
            assert_eq!(datapath::kind(k.detector()), k.as_str());
            assert_eq!(datapath::detector(k.as_str()), Some(k.detector()));
        }
        assert_eq!(datapath::kind("scan_vertical"), datapath::ANOMALY);
        assert_eq!(datapath::detector("anomaly"), None);
    }
}
