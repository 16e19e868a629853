//! Per-device baselines from flow records: who the device talks to (peers, named by site group),
//! on which services, with which protocols and application identities, how much per hour of day
//! (median and MAD over the days of the window) and how regularly per peer. Every set is bounded
//! (first come, first kept) and what did not fit is counted, so a baseline stays a few KiB.

mod build;
pub mod groups;
pub mod lifecycle;
pub mod stats;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use build::{BaselineBuilder, baselines};
pub use groups::Groups;
pub use stats::Periodicity;

use crate::flow::{DeviceRef, FlowDirection};

/// Bounds of one baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub peers: usize,
    pub services: usize,
    pub apps: usize,
    /// Flow starts kept per peer for periodicity.
    pub starts_per_peer: usize,
    /// Days of hourly volume kept (the most recent).
    pub days: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peers: 32,
            services: 32,
            apps: 8,
            starts_per_peer: 64,
            days: 14,
        }
    }
}

/// The learning window: the whole capture offline, a configured span live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub device: DeviceRef,
    pub window: Window,
    pub flows: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub peers: Vec<Peer>,
    /// Flows to peers past `Limits::peers` (not listed).
    pub peers_overflow: u64,
    pub services: Vec<Service>,
    pub services_overflow: u64,
    /// Flows per IP protocol name (`tcp`, `udp`, `icmp`, `icmpv6`, `ip-47` ...).
    pub protocols: BTreeMap<String, u64>,
    pub apps: Vec<App>,
    pub apps_overflow: u64,
    /// Hour of day (UTC, 0-23) -> bytes and flows across the window's days.
    pub hourly: Vec<Hour>,
    pub tcp: TcpCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub addr: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub flows: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Periodicity>,
}

/// A (direction, protocol, service port) the device used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub direction: FlowDirection,
    pub proto: u8,
    pub port: u16,
    pub flows: u64,
    pub bytes: u64,
    /// Distinct peers (counted up to `Limits::peers`).
    pub peers: u32,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// `dicom CT1 -> PACS`, `hl7 EPIC/HOSP -> LAB/LABFAC ADT^A01`.
    pub identity: String,
    pub direction: FlowDirection,
    pub port: u16,
    pub flows: u64,
    pub last_seen_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hour {
    pub hour: u8,
    /// Days of the window holding this hour.
    pub days: u32,
    pub bytes_median: f64,
    pub bytes_mad: f64,
    pub flows_median: f64,
    pub flows_mad: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounts {
    pub established: u64,
    pub refused: u64,
    pub no_answer: u64,
    pub unknown: u64,
}

/// The name of an IP protocol number as profiles write it.
pub fn proto_name(p: u8) -> String {
    use crate::decode::proto;
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        other => format!("ip-{other}"),
    }
}

/// The protocol number of a name as [`proto_name`] writes it (`None` for any other spelling).
pub fn proto_number(name: &str) -> Option<u8> {
    use crate::decode::proto;
    let p = match name {
        "tcp" => proto::TCP,
        "udp" => proto::UDP,
        "icmp" => proto::ICMP,
        "icmpv6" => proto::ICMPV6,
        other => other.strip_prefix("ip-")?.parse().ok()?,
    };
    // `ip-6` or `ip-017` are not how tcp and udp are written.
    (proto_name(p) == name).then_some(p)
}

#[cfg(test)]
mod tests;
