//! Packet decoding: a link type, the captured frame bytes and a timestamp in, the addresses,
//! ports and first payload bytes of one IP packet out. pnet_packet reads each header; this module
//! only checks lengths pnet leaves to the caller (header lengths inside the frame) so any bytes
//! give a value or an error, never a panic.

mod ip;
mod link;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// The pcap LINKTYPE_* values this decoder reads (<https://www.tcpdump.org/linktypes.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1), with 802.1Q / 802.1ad tags.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113), Linux "cooked" capture v1 (`tcpdump -i any`).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276), Linux cooked capture v2.
    LinuxSll2,
    /// LINKTYPE_RAW (101) and LINKTYPE_IPV4 (228) / LINKTYPE_IPV6 (229): the frame is the IP packet.
    RawIp,
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte address family in the capturing host's order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, the address family in network order.
    Loop,
}

impl LinkType {
    /// The link type for a pcap LINKTYPE number, or an error naming the refused type.
    pub fn from_linktype(n: u32) -> Result<LinkType, UnsupportedLink> {
        Ok(match n {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            101 | 228 | 229 => LinkType::RawIp,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            _ => return Err(UnsupportedLink { linktype: n }),
        })
    }
}

/// A link type this decoder does not read, named as libpcap names it where known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("link type {} ({linktype}) is not supported (supported: ETHERNET, LINUX_SLL, LINUX_SLL2, RAW, IPV4, IPV6, NULL, LOOP)", linktype_name(*.linktype))]
pub struct UnsupportedLink {
    pub linktype: u32,
}

/// libpcap's name for the link types met in practice (for the refusal message).
pub fn linktype_name(n: u32) -> &'static str {
    match n {
        0 => "NULL",
        1 => "ETHERNET",
        6 => "IEEE802_5",
        9 => "PPP",
        50 => "PPP_HDLC",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        119 => "PRISM_HEADER",
        127 => "IEEE802_11_RADIOTAP",
        195 => "IEEE802_15_4_WITHFCS",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        249 => "USBPCAP",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// Why a frame could not be decoded. Every variant says at which layer the bytes ran out or
/// made no sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{layer} header truncated: {have} bytes, need {need}")]
    Truncated {
        layer: &'static str,
        have: usize,
        need: usize,
    },
    #[error("{layer}: {what}")]
    Invalid {
        layer: &'static str,
        what: &'static str,
    },
    #[error("more than {max} VLAN tags")]
    TooManyTags { max: usize },
}

/// The IP protocol numbers the flow table names.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits (as in the header's 13th byte).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// One decoded IP packet, borrowing its payload from the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Link-layer source, when the link type carries it (Ethernet, SLL, SLL2).
    pub src_mac: Option<Mac>,
    /// Link-layer destination (Ethernet only).
    pub dst_mac: Option<Mac>,
    /// The innermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// TCP/UDP ports; 0 for other protocols (as in the datapath).
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// Bytes at the IP layer as the IP header states them (the frame may be cut by a snap length).
    pub ip_len: u32,
    /// A non-first IP fragment: no transport header, ports are 0.
    pub fragment: bool,
    /// The transport payload present in the frame (TCP/UDP data; empty for others).
    pub payload: &'a [u8],
}

/// What a frame holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Ip(Packet<'a>),
    /// Not IP (ARP, LLDP, ...): the EtherType, counted by the caller.
    NotIp {
        ethertype: u16,
    },
}

/// Decodes one captured frame.
pub fn decode(link: LinkType, frame: &[u8], ts_ns: u64) -> Result<Decoded<'_>, DecodeError> {
    let l3 = link::strip(link, frame)?;
    match l3.ethertype {
        link::ETHERTYPE_IPV4 | link::ETHERTYPE_IPV6 => {
            let mut pkt = ip::decode(l3.ethertype, l3.bytes, ts_ns)?;
            pkt.src_mac = l3.src_mac;
            pkt.dst_mac = l3.dst_mac;
            pkt.vlan = l3.vlan;
            Ok(Decoded::Ip(pkt))
        }
        ethertype => Ok(Decoded::NotIp { ethertype }),
    }
}

pub(crate) fn need(layer: &'static str, bytes: &[u8], need: usize) -> Result<(), DecodeError> {
    if bytes.len() < need {
        Err(DecodeError::Truncated {
            layer,
            have: bytes.len(),
            need,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
