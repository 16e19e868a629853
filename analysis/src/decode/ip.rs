//! IPv4 / IPv6 (with extension headers) and the transport header (TCP, UDP, ICMP, ICMPv6).

use std::net::IpAddr;

use pnet_packet::{
    icmp::IcmpPacket, icmpv6::Icmpv6Packet, ipv4::Ipv4Packet, ipv6::Ipv6Packet, tcp::TcpPacket,
    udp::UdpPacket,
};

use super::{DecodeError, Packet, link::ETHERTYPE_IPV4, need, proto};

/// IPv6 extension headers walked before giving up (a real packet has a few).
const MAX_EXT_HEADERS: usize = 8;

pub fn decode(ethertype: u16, bytes: &[u8], ts_ns: u64) -> Result<Packet<'_>, DecodeError> {
    let net = if ethertype == ETHERTYPE_IPV4 {
        ipv4(bytes)?
    } else {
        ipv6(bytes)?
    };
    let mut pkt = Packet {
        ts_ns,
        src_mac: None,
        dst_mac: None,
        vlan: None,
        src: net.src,
        dst: net.dst,
        proto: net.proto,
        src_port: 0,
        dst_port: 0,
        icmp: None,
        tcp_flags: 0,
        tcp_seq: 0,
        ip_len: net.ip_len,
        fragment: net.fragment,
        payload: &[],
    };
    if !net.fragment {
        transport(&mut pkt, net.l4)?;
    }
    Ok(pkt)
}

struct Net<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ip_len: u32,
    fragment: bool,
    l4: &'a [u8],
}

fn ipv4(bytes: &[u8]) -> Result<Net<'_>, DecodeError> {
    const L: &str = "IPv4";
    need(L, bytes, Ipv4Packet::minimum_packet_size())?;
    let h = Ipv4Packet::new(bytes).ok_or(DecodeError::Invalid {
        layer: L,
        what: "no header",
    })?;
    if h.get_version() != 4 {
        return Err(DecodeError::Invalid {
            layer: L,
            what: "version is not 4",
        });
    }
    let ihl = usize::from(h.get_header_length()) * 4;
    if ihl < Ipv4Packet::minimum_packet_size() {
        return Err(DecodeError::Invalid {
            layer: L,
            what: "header length below 20 bytes",
        });
    }
    need(L, bytes, ihl)?;
    let total = usize::from(h.get_total_length());
    // A total length of 0 is what segmentation offload leaves in captures taken on the sender:
    // the frame's length is the packet's.
    let total = if total == 0 { bytes.len() } else { total };
    if total < ihl {
        return Err(DecodeError::Invalid {
            layer: L,
            what: "total length below header length",
        });
    }
    let end = total.min(bytes.len());
    Ok(Net {
        src: IpAddr::V4(h.get_source()),
        dst: IpAddr::V4(h.get_destination()),
        proto: h.get_next_level_protocol().0,
        ip_len: total as u32,
        fragment: h.get_fragment_offset() != 0,
        l4: &bytes[ihl..end],
    })
}

fn ipv6(bytes: &[u8]) -> Result<Net<'_>, DecodeError> {
    const L: &str = "IPv6";
    const HDR: usize = 40;
    need(L, bytes, HDR)?;
    let h = Ipv6Packet::new(bytes).ok_or(DecodeError::Invalid {
        layer: L,
        what: "no header",
    })?;
    if h.get_version() != 6 {
        return Err(DecodeError::Invalid {
            layer: L,
            what: "version is not 6",
        });
    }
    let total = HDR + usize::from(h.get_payload_length());
    let end = total.min(bytes.len());
    let mut next = h.get_next_header().0;
    let mut off = HDR;
    let mut fragment = false;
    for _ in 0..=MAX_EXT_HEADERS {
        // Hand-walked: pnet's extension packet types do not compute an AH header's length.
        let len = match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                need("IPv6 extension header", &bytes[off.min(end)..end], 2)?;
                (usize::from(bytes[off + 1]) + 1) * 8
            }
            // Fragment: 8 bytes; a non-zero offset has no transport header.
            44 => {
                need("IPv6 fragment header", &bytes[off.min(end)..end], 8)?;
                let offset = u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]) >> 3;
                fragment |= offset != 0;
                8
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                need("IPv6 AH", &bytes[off.min(end)..end], 2)?;
                (usize::from(bytes[off + 1]) + 2) * 4
            }
            _ => {
                return Ok(Net {
                    src: IpAddr::V6(h.get_source()),
                    dst: IpAddr::V6(h.get_destination()),
                    proto: next,
                    ip_len: total as u32,
                    fragment,
                    l4: &bytes[off.min(end)..end],
                });
            }
        };
        need("IPv6 extension header", &bytes[off.min(end)..end], len)?;
        next = bytes[off];
        off += len;
        if fragment {
            break;
        }
    }
    if fragment {
        return Ok(Net {
            src: IpAddr::V6(h.get_source()),
            dst: IpAddr::V6(h.get_destination()),
            proto: next,
            ip_len: total as u32,
            fragment,
            l4: &[],
        });
    }
    Err(DecodeError::Invalid {
        layer: L,
        what: "too many extension headers",
    })
}

fn transport<'a>(pkt: &mut Packet<'a>, l4: &'a [u8]) -> Result<(), DecodeError> {
    match pkt.proto {
        proto::TCP => {
            need("TCP", l4, TcpPacket::minimum_packet_size())?;
            let t = TcpPacket::new(l4).ok_or(DecodeError::Invalid {
                layer: "TCP",
                what: "no header",
            })?;
            let off = usize::from(t.get_data_offset()) * 4;
            if off < TcpPacket::minimum_packet_size() {
                return Err(DecodeError::Invalid {
                    layer: "TCP",
                    what: "data offset below 20 bytes",
                });
            }
            need("TCP", l4, off)?;
            pkt.src_port = t.get_source();
            pkt.dst_port = t.get_destination();
            pkt.tcp_flags = t.get_flags();
            pkt.tcp_seq = t.get_sequence();
            pkt.payload = &l4[off..];
        }
        proto::UDP => {
            need("UDP", l4, UdpPacket::minimum_packet_size())?;
            let u = UdpPacket::new(l4).ok_or(DecodeError::Invalid {
                layer: "UDP",
                what: "no header",
            })?;
            pkt.src_port = u.get_source();
            pkt.dst_port = u.get_destination();
            // The UDP length bounds the payload when it is sane; the IP length already did.
            let len = usize::from(u.get_length());
            let end = if len >= 8 {
                len.min(l4.len())
            } else {
                l4.len()
            };
            pkt.payload = &l4[UdpPacket::minimum_packet_size()..end];
        }
        proto::ICMP => {
            need("ICMP", l4, IcmpPacket::minimum_packet_size())?;
            let i = IcmpPacket::new(l4).ok_or(DecodeError::Invalid {
                layer: "ICMP",
                what: "no header",
            })?;
            pkt.icmp = Some((i.get_icmp_type().0, i.get_icmp_code().0));
        }
        proto::ICMPV6 => {
            need("ICMPv6", l4, Icmpv6Packet::minimum_packet_size())?;
            let i = Icmpv6Packet::new(l4).ok_or(DecodeError::Invalid {
                layer: "ICMPv6",
                what: "no header",
            })?;
            pkt.icmp = Some((i.get_icmpv6_type().0, i.get_icmpv6_code().0));
        }
        _ => {}
    }
    Ok(())
}
