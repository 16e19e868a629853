//! Address claims from ARP: which MAC says it holds which IPv4 address (a reply's or request's
//! sender, a gratuitous announcement), for the spoofing detector. Reads Ethernet frames (with
//! 802.1Q / 802.1ad tags) through pnet; any bytes give a claim or `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr};

use pnet_packet::{
    Packet as _,
    arp::{ArpHardwareTypes, ArpOperations, ArpPacket},
    ethernet::EthernetPacket,
    vlan::VlanPacket,
};
use serde::{Deserialize, Serialize};

use crate::{decode::LinkType, mac::Mac};

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const VLAN_TYPES: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const MAX_TAGS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// An ARP request's sender fields.
    ArpRequest,
    /// An ARP reply's sender fields.
    ArpReply,
    /// A gratuitous ARP (sender address = target address).
    Gratuitous,
}

/// A MAC claiming an address at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    pub ts_ns: u64,
    /// The MAC the claim names (ARP sender hardware address).
    pub mac: Mac,
    /// The frame's Ethernet source (differs from `mac` in a forged claim or a proxy).
    pub frame_src: Mac,
    pub addr: IpAddr,
    pub kind: ClaimKind,
    pub vlan: Option<u16>,
}

/// The ARP claim a frame carries, if it is an Ethernet/IPv4 ARP request or reply with a
/// non-zero sender address (probes from 0.0.0.0 claim nothing).
pub fn claim(link: LinkType, frame: &[u8], ts_ns: u64) -> Option<AddressClaim> {
    if link != LinkType::Ethernet {
        return None;
    }
    let eth = EthernetPacket::new(frame)?;
    let frame_src = Mac(eth.get_source().octets());
    let mut ethertype = eth.get_ethertype().0;
    let mut rest = eth.payload();
    let mut vlan = None;
    let mut tags = 0;
    while VLAN_TYPES.contains(&ethertype) {
        tags += 1;
        if tags > MAX_TAGS {
            return None;
        }
        let tag = VlanPacket::new(rest)?;
        vlan = Some(tag.get_vlan_identifier());
        ethertype = tag.get_ethertype().0;
        rest = &rest[VlanPacket::minimum_packet_size()..];
    }
    if ethertype != ETHERTYPE_ARP {
        return None;
    }
    let arp = ArpPacket::new(rest)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type().0 != ETHERTYPE_IPV4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return None;
    }
    let sender: Ipv4Addr = arp.get_sender_proto_addr();
    if sender.is_unspecified() {
        return None;
    }
    let op = arp.get_operation();
    let kind = if sender == arp.get_target_proto_addr() {
        ClaimKind::Gratuitous
    } else if op == ArpOperations::Reply {
        ClaimKind::ArpReply
    } else if op == ArpOperations::Request {
        ClaimKind::ArpRequest
    } else {
        return None;
    };
    Some(AddressClaim {
        ts_ns,
        mac: Mac(arp.get_sender_hw_addr().octets()),
        frame_src,
        addr: IpAddr::V4(sender),
        kind,
        vlan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_frame(op: u16, smac: [u8; 6], sip: [u8; 4], tip: [u8; 4], tagged: bool) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&smac);
        if tagged {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&smac);
        f.extend_from_slice(&sip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tip);
        f
    }

    #[test]
    fn reads_replies_requests_and_announcements() {
        let m = [2, 0, 0, 0, 0, 0x0a];
        let c = claim(
            LinkType::Ethernet,
            &arp_frame(2, m, [192, 0, 2, 10], [192, 0, 2, 1], false),
            7,
        )
        .unwrap();
        assert_eq!(c.kind, ClaimKind::ArpReply);
        assert_eq!(c.addr, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(c.mac, Mac(m));
        assert_eq!(c.ts_ns, 7);
        let g = claim(
            LinkType::Ethernet,
            &arp_frame(1, m, [192, 0, 2, 10], [192, 0, 2, 10], true),
            0,
        )
        .unwrap();
        assert_eq!((g.kind, g.vlan), (ClaimKind::Gratuitous, Some(5)));
        // A probe claims nothing; other link types and cut frames give None.
        assert!(
            claim(
                LinkType::Ethernet,
                &arp_frame(1, m, [0; 4], [192, 0, 2, 10], false),
                0
            )
            .is_none()
        );
        assert!(
            claim(
                LinkType::RawIp,
                &arp_frame(2, m, [192, 0, 2, 10], [192, 0, 2, 1], false),
                0
            )
            .is_none()
        );
        let full = arp_frame(2, m, [192, 0, 2, 10], [192, 0, 2, 1], false);
        for n in 0..full.len() {
            assert!(
                claim(LinkType::Ethernet, &full[..n], 0).is_none(),
                "cut at {n}"
            );
        }
    }
}
