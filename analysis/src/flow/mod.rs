//! Flow records: one per flow a device opened or received, the unit both the live agent (from
//! datapath events) and offline learning (from captures, through [`FlowTable`]) produce, and the
//! only input of baselines, detectors, proposals and simulation.

mod first_bytes;
mod identity;
mod outcome;
pub mod probe;
mod table;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use first_bytes::{FIRST_BYTES, FirstBytes};
pub use identity::FlowIdentity;
pub use outcome::{FlowOutcome, OutcomeCounts};
pub use probe::TcpFlags;
pub use table::{FlowTable, FlowTableConfig, TableStats};

use crate::{app::AppIdentity, mac::Mac};

/// Who opened the flow, seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowDirection {
    /// The device sent the first packet (client side): policy's `from_device`.
    Opened,
    /// The peer sent the first packet (server side): policy's `to_device`.
    Received,
}

impl FlowDirection {
    pub fn to_policy(self) -> wardgate_policy::Direction {
        match self {
            FlowDirection::Opened => wardgate_policy::Direction::FromDevice,
            FlowDirection::Received => wardgate_policy::Direction::ToDevice,
        }
    }
}

/// How a TCP flow's handshake went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpOutcome {
    /// SYN answered by SYN-ACK (or, for a flow seen mid-stream, packets both ways).
    Established,
    /// SYN answered by RST.
    Refused,
    /// SYN(s) with no answer.
    NoAnswer,
    /// Seen mid-stream one way only: the handshake is not in the record.
    Unknown,
}

/// The device end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    /// Site name, or a name made from the MAC's vendor (`Philips-00:1b:..`) or address.
    pub name: String,
    /// Site device id, when the device comes from a site file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

/// One flow of one device. A flow between two devices gives two records (one each side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub device: DeviceRef,
    pub direction: FlowDirection,
    pub device_addr: IpAddr,
    pub device_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...): what `policy::lower::lookup` takes.
    pub proto: u8,
    /// The service port: the responder's port (the peer's when the device opened the flow, the
    /// device's when it received it); 0 for protocols without ports, as in the datapath.
    pub port: u16,
    /// ICMP/ICMPv6 type of the first packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// Innermost VLAN id, if tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Packets and IP-layer bytes the device sent.
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Packets and IP-layer bytes the device received.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Nanoseconds since the Unix epoch.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// TCP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpOutcome>,
    /// How the flow ended up, every protocol (completed, refused, unanswered, denied by the
    /// datapath): proposals allow completed flows only by default.
    #[serde(default)]
    pub outcome: FlowOutcome,
    /// The policy rule that admitted the flow (live records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// Application identity from the first payload bytes (DICOM association, HL7 header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppIdentity>,
    /// TCP flags: the opening packet's and each way's (ORed), for probes and half-open
    /// contacts. None for other protocols, and from agents that predate them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlags>,
    /// The DNS name the device asked for when its resolver answered with this peer just before
    /// the flow (`dns::names`); opened flows only. None from agents that predate names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    /// What a flow already recorded moved since its last record (live: every `long_running`
    /// while it runs, and the rest when it ends; offline the same with a `continue_every`):
    /// counters and span are that stretch's only. Not a new flow: only detectors of amounts
    /// (volume, flood) read it ([`crate::detect::Detector::takes_continuations`]), and it is
    /// never learned from, proposed from or sent to the controller.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continuation: bool,
}

impl FlowRecord {
    pub fn bytes(&self) -> u64 {
        self.bytes_out + self.bytes_in
    }
    pub fn packets(&self) -> u64 {
        self.packets_out + self.packets_in
    }
    /// Packets and TCP flags of the end that opened the flow, then of the end that answered.
    pub fn opener_responder(&self) -> ((u64, u8), (u64, u8)) {
        let f = self.tcp_flags.unwrap_or_default();
        let out = (self.packets_out, f.sent);
        let inn = (self.packets_in, f.received);
        match self.direction {
            FlowDirection::Opened => (out, inn),
            FlowDirection::Received => (inn, out),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
