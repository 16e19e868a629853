//! What the TCP flags of a flow say about its opener: a contact that failed (Zeek's
//! `is_failed_conn`: refused, unanswered, or answered and then reset by the opener before any
//! data), and probes whose flags alone betray them (NULL, FIN, Xmas, SYN+FIN: no stack opens a
//! connection that way; nmap's `-sN`, `-sF`, `-sX` do). The scan detectors count failed
//! contacts whichever side opened the flow; the flag-probe detector raises probes at once.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{FlowDirection, FlowOutcome, FlowRecord, TcpOutcome};
use crate::decode::{proto, tcp_flags};

const PSH: u8 = 0x08;
const URG: u8 = 0x20;

/// TCP flags of one flow: the opening packet's, and every packet's ORed each way, as the device
/// sent and received them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpFlags {
    /// The flags of the packet that opened the flow (the opener's first packet).
    pub first: u8,
    /// Every packet the device sent, ORed.
    pub sent: u8,
    /// Every packet the device received, ORed.
    pub received: u8,
}

/// A probe whose opening flags no TCP stack sends to open a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagProbe {
    /// No flag at all (nmap `-sN`).
    Null,
    /// FIN alone (nmap `-sF`).
    Fin,
    /// FIN, PSH and URG (nmap `-sX`).
    Xmas,
    /// SYN and FIN in one packet.
    SynFin,
    /// Any other opening without SYN, ACK or RST.
    Odd,
}

impl FlagProbe {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagProbe::Null => "NULL",
            FlagProbe::Fin => "FIN",
            FlagProbe::Xmas => "Xmas",
            FlagProbe::SynFin => "SYN+FIN",
            FlagProbe::Odd => "odd-flags",
        }
    }
}

/// The opening packet's probe kind, if its flags are one (TCP records with flags only).
pub fn flag_probe(r: &FlowRecord) -> Option<FlagProbe> {
    if r.proto != proto::TCP {
        return None;
    }
    let f = r.tcp_flags?.first;
    let (syn, fin, ack, rst) = (
        f & tcp_flags::SYN != 0,
        f & tcp_flags::FIN != 0,
        f & tcp_flags::ACK != 0,
        f & tcp_flags::RST != 0,
    );
    if syn {
        return fin.then_some(FlagProbe::SynFin);
    }
    if ack || rst {
        // Mid-stream, or a stray reset: not an opening.
        return None;
    }
    Some(match f {
        0 => FlagProbe::Null,
        tcp_flags::FIN => FlagProbe::Fin,
        x if x & (tcp_flags::FIN | PSH | URG) == tcp_flags::FIN | PSH | URG => FlagProbe::Xmas,
        _ => FlagProbe::Odd,
    })
}

/// Typical largest IP + TCP header without payload (a SYN with MSS, SACK, timestamps and window
/// scale): a flow whose packets average no more carried no data. A few bytes of payload can read
/// as none; the records hold no payload count (the live agent's conntrack entry has none).
fn header_bytes(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(_) => 60,
        IpAddr::V6(_) => 80,
    }
}

/// No payload either way: every packet no bigger than its headers (options included).
pub fn no_data(r: &FlowRecord) -> bool {
    let h = header_bytes(r.device_addr);
    r.bytes_out <= r.packets_out * h && r.bytes_in <= r.packets_in * h
}

/// Answered (SYN-ACK), then reset by the opener with no data either way: a SYN scan's probe
/// of an open port (nmap `-sS`), or a connect scan's (`-sT`). Zeek counts it as failed.
pub fn half_open(r: &FlowRecord) -> bool {
    let Some(_) = r.tcp_flags else { return false };
    let ((_, opener), (_, responder)) = r.opener_responder();
    r.proto == proto::TCP
        && opener & tcp_flags::RST != 0
        && responder & tcp_flags::SYN != 0
        && no_data(r)
}

/// An ACK alone that met a reset or nothing, with no data (nmap `-sA`, firewall mapping): a
/// failed contact, counted, but not raised alone (a stale ACK after a state loss looks the same).
pub fn ack_probe(r: &FlowRecord) -> bool {
    let Some(f) = r.tcp_flags else { return false };
    let ((opener_packets, _), (_, responder)) = r.opener_responder();
    r.proto == proto::TCP
        && f.first == tcp_flags::ACK
        && opener_packets == 1
        && responder & !tcp_flags::RST & !tcp_flags::ACK == 0
        && no_data(r)
}

/// Whether the opener's contact failed: refused, unanswered (TCP: no SYN-ACK; other protocols:
/// nothing back), denied by the datapath, half-open, or a flag or ACK probe. UDP services that
/// never answer (syslog, SNMP traps) are the caller's to leave out.
pub fn failed_contact(r: &FlowRecord) -> bool {
    if r.outcome == FlowOutcome::Denied {
        return true;
    }
    match r.proto {
        proto::TCP => {
            matches!(r.tcp, Some(TcpOutcome::Refused | TcpOutcome::NoAnswer))
                || half_open(r)
                || ack_probe(r)
                || flag_probe(r).is_some()
        }
        proto::UDP => {
            let (_, (responder_packets, _)) = r.opener_responder();
            responder_packets == 0
        }
        _ => false,
    }
}

/// The opener's address and the responder's.
pub fn opener_and_target(r: &FlowRecord) -> (IpAddr, IpAddr) {
    match r.direction {
        FlowDirection::Opened => (r.device_addr, r.peer),
        FlowDirection::Received => (r.peer, r.device_addr),
    }
}
