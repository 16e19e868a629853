//! The formats a SIEM reads, as pure functions of a finding: an RFC 5424 syslog line with a CEF
//! payload, and OCSF 1.x JSON (Detection Finding for findings, Network Activity for deny records).

pub mod cef;
pub mod ocsf;

use crate::decode::proto;

/// The vendor and product as every format names them.
pub const VENDOR: &str = "wardgate";
pub const PRODUCT: &str = "wardgate";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the epoch (CEF `rt`, OCSF `time`).
pub fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The IANA keyword of an IP protocol number, as CEF `proto` and OCSF `protocol_name` take it.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "TCP".into(),
        proto::UDP => "UDP".into(),
        proto::ICMP => "ICMP".into(),
        proto::ICMPV6 => "IPv6-ICMP".into(),
        other => other.to_string(),
    }
}

/// Every detector name a finding can carry (what `wardctl alerts suppress --detector` takes);
/// each has its own [`title`].
pub const DETECTORS: &[&str] = &[
    "scan_vertical",
    "scan_horizontal",
    "scan_trw",
    "scan_flag_probe",
    "fanout",
    "class_protocol",
    "flood_syn",
    "flood_udp",
    "flood_icmp",
    "spoof",
    "new_peer",
    "new_service",
    "new_protocol",
    "new_app",
    "volume",
    "beacon",
    "brute_force",
    "rogue_dhcp",
    "rogue_router",
    "lateral",
    "dns_tunnel",
    "dns_nxdomain",
    "datapath_deny",
    "datapath_would_deny",
    "datapath_unknown_device",
    "datapath_new_address",
    "datapath_flow_cap",
    "datapath_watchdog",
    "datapath_app_refused",
    "operator_quarantine",
];

/// A short title per detector (CEF Name, OCSF finding_info.title).
pub fn title(detector: &str) -> String {
    match detector {
        "scan_vertical" => "Port scan (vertical)".into(),
        "scan_horizontal" => "Address scan (horizontal)".into(),
        "scan_trw" => "Scan (failed first contacts)".into(),
        "scan_flag_probe" => "TCP flag probe (NULL, FIN, Xmas)".into(),
        "fanout" => "Fan-out to new peers".into(),
        "class_protocol" => "Protocol the device class never uses".into(),
        "flood_syn" => "SYN flood".into(),
        "flood_udp" => "UDP flood".into(),
        "flood_icmp" => "ICMP flood".into(),
        "spoof" => "Address spoofing".into(),
        "new_peer" => "New peer".into(),
        "new_service" => "New service".into(),
        "new_protocol" => "New protocol".into(),
        "new_app" => "New application identity".into(),
        "volume" => "Volume spike".into(),
        "beacon" => "Beaconing".into(),
        "brute_force" => "Brute force on a login service".into(),
        "rogue_dhcp" => "Device answering as a DHCP server".into(),
        "rogue_router" => "Device announcing itself as a router".into(),
        "lateral" => "Device reaching a device on another segment".into(),
        "dns_tunnel" => "DNS tunnelling".into(),
        "dns_nxdomain" => "Burst of NXDOMAIN answers (DGA-like)".into(),
        "datapath_deny" => "Flow denied by policy".into(),
        "datapath_would_deny" => "Flow the policy would deny (monitor)".into(),
        "datapath_unknown_device" => "Traffic from an unknown device".into(),
        "datapath_new_address" => "Device at an unlisted address".into(),
        "datapath_flow_cap" => "Device over its flow budget".into(),
        "datapath_watchdog" => "Gateway watchdog".into(),
        "datapath_app_refused" => "Application rule refused a flow".into(),
        "operator_quarantine" => "Device quarantined by the SOC".into(),
        other => other.replace('_', " "),
    }
}

#[cfg(test)]
mod detector_tests {
    #[test]
    fn every_listed_detector_has_its_own_title() {
        for d in super::DETECTORS {
            assert_ne!(super::title(d), d.replace('_', " "), "{d} has no title");
        }
    }
}
