//! Link layers down to the network layer: Ethernet (with VLAN tags), Linux cooked v1/v2, raw IP,
//! BSD/OpenBSD loopback.

use pnet_packet::{ethernet::EthernetPacket, sll::SLLPacket, sll2::SLL2Packet, vlan::VlanPacket};

use super::{DecodeError, LinkType, need};
use crate::mac::Mac;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// Tags read before giving up (802.1ad double tagging is 2; more is a crafted frame).
const MAX_TAGS: usize = 4;
/// Header lengths of Linux cooked captures; pnet's `minimum_packet_size` for them leaves out the
/// 8-byte address field, so it cannot be the bounds check.
const SLL_LEN: usize = 16;
const SLL2_LEN: usize = 20;
/// ARPHRD_ETHER: the SLL address is a 6-byte MAC.
const ARPHRD_ETHER: u16 = 1;

/// The network-layer bytes of a frame and what the link layer said about them.
pub struct L3<'a> {
    pub ethertype: u16,
    pub bytes: &'a [u8],
    pub src_mac: Option<Mac>,
    pub dst_mac: Option<Mac>,
    pub vlan: Option<u16>,
}

impl<'a> L3<'a> {
    fn ip(ethertype: u16, bytes: &'a [u8]) -> Self {
        L3 {
            ethertype,
            bytes,
            src_mac: None,
            dst_mac: None,
            vlan: None,
        }
    }
}

pub fn strip(link: LinkType, frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    match link {
        LinkType::Ethernet => ethernet(frame),
        LinkType::LinuxSll => sll(frame),
        LinkType::LinuxSll2 => sll2(frame),
        LinkType::RawIp => raw(frame),
        LinkType::Null => null(frame, false),
        LinkType::Loop => null(frame, true),
    }
}

fn ethernet(frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    need("Ethernet", frame, EthernetPacket::minimum_packet_size())?;
    let eth = EthernetPacket::new(frame).ok_or(DecodeError::Invalid {
        layer: "Ethernet",
        what: "no header",
    })?;
    let mut ethertype = eth.get_ethertype().0;
    let mut off = EthernetPacket::minimum_packet_size();
    let mut vlan = None;
    let mut tags = 0;
    while matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
    ) {
        tags += 1;
        if tags > MAX_TAGS {
            return Err(DecodeError::TooManyTags { max: MAX_TAGS });
        }
        let rest = &frame[off..];
        need("802.1Q tag", rest, VlanPacket::minimum_packet_size())?;
        let tag = VlanPacket::new(rest).ok_or(DecodeError::Invalid {
            layer: "802.1Q tag",
            what: "no header",
        })?;
        vlan = Some(tag.get_vlan_identifier());
        ethertype = tag.get_ethertype().0;
        off += VlanPacket::minimum_packet_size();
    }
    Ok(L3 {
        ethertype,
        bytes: &frame[off..],
        src_mac: Some(Mac(eth.get_source().octets())),
        dst_mac: Some(Mac(eth.get_destination().octets())),
        vlan,
    })
}

fn sll_mac(arphrd: u16, len: usize, addr: &[u8]) -> Option<Mac> {
    (arphrd == ARPHRD_ETHER && len == 6 && addr.len() >= 6)
        .then(|| Mac([addr[0], addr[1], addr[2], addr[3], addr[4], addr[5]]))
}

fn sll(frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    need("Linux SLL", frame, SLL_LEN)?;
    let h = SLLPacket::new(frame).ok_or(DecodeError::Invalid {
        layer: "Linux SLL",
        what: "no header",
    })?;
    let src_mac = sll_mac(
        h.get_link_layer_address_type(),
        usize::from(h.get_link_layer_address_len()),
        &h.get_link_layer_address(),
    );
    Ok(L3 {
        src_mac,
        ..L3::ip(h.get_protocol().0, &frame[SLL_LEN..])
    })
}

fn sll2(frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    need("Linux SLL2", frame, SLL2_LEN)?;
    let h = SLL2Packet::new(frame).ok_or(DecodeError::Invalid {
        layer: "Linux SLL2",
        what: "no header",
    })?;
    let src_mac = sll_mac(
        h.get_arphrd_type(),
        usize::from(h.get_link_layer_address_length()),
        &h.get_link_layer_address(),
    );
    Ok(L3 {
        src_mac,
        ..L3::ip(h.get_protocol_type().0, &frame[SLL2_LEN..])
    })
}

/// The IP version nibble picks the network layer.
fn raw(frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    need("raw IP", frame, 1)?;
    match frame[0] >> 4 {
        4 => Ok(L3::ip(ETHERTYPE_IPV4, frame)),
        6 => Ok(L3::ip(ETHERTYPE_IPV6, frame)),
        _ => Err(DecodeError::Invalid {
            layer: "raw IP",
            what: "IP version is neither 4 nor 6",
        }),
    }
}

/// BSD loopback: a 4-byte address family, in the capturing host's byte order for NULL (pnet has
/// no type for this 4-byte header). AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24
/// (NetBSD, OpenBSD), 28 (FreeBSD) or 30 (macOS).
fn null(frame: &[u8], network_order: bool) -> Result<L3<'_>, DecodeError> {
    need("loopback", frame, 4)?;
    let raw = [frame[0], frame[1], frame[2], frame[3]];
    let be = u32::from_be_bytes(raw);
    let le = u32::from_le_bytes(raw);
    // The family is small, so the order whose value fits in 16 bits is the writer's order.
    let family = if network_order || be <= 0xffff {
        be
    } else {
        le
    };
    let ethertype = match family {
        2 => ETHERTYPE_IPV4,
        10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
        _ => {
            return Err(DecodeError::Invalid {
                layer: "loopback",
                what: "address family is neither IPv4 nor IPv6",
            });
        }
    };
    Ok(L3::ip(ethertype, &frame[4..]))
}
