use std::net::IpAddr;

use etherparse::PacketBuilder;

use super::*;

const DEV: [u8; 6] = [0x00, 0x03, 0xb1, 0, 0, 1];
const GW: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An IPv4/TCP SYN from 192.0.2.10:40000 to 198.51.100.5:104 carrying `payload`.
pub(crate) fn v4_tcp(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 5], 64)
        .tcp(40000, 104, 7, 1000)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn v6_udp(payload: &[u8]) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    let b = PacketBuilder::ipv6(src, dst, 64).udp(5353, 53);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn ether(ethertype: u16, tags: &[u16], l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GW);
    f.extend_from_slice(&DEV);
    let mut types: Vec<u16> = Vec::new();
    for (i, _) in tags.iter().enumerate() {
        types.push(if i == 0 && tags.len() > 1 {
            0x88a8
        } else {
            0x8100
        });
    }
    types.push(ethertype);
    f.extend_from_slice(&types[0].to_be_bytes());
    for (i, t) in tags.iter().enumerate() {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&types[i + 1].to_be_bytes());
    }
    f.extend_from_slice(l3);
    f
}

fn sll(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6];
    f.extend_from_slice(&DEV);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn sll2(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = ethertype.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 4, 6]);
    f.extend_from_slice(&DEV);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(l3);
    f
}

fn ip_of(d: Decoded<'_>) -> Packet<'_> {
    match d {
        Decoded::Ip(p) => p,
        other => panic!("not IP: {other:?}"),
    }
}

#[test]
fn every_link_type_gives_the_same_packet() {
    let l3 = v4_tcp(b"hello");
    let mut null_le = 2u32.to_le_bytes().to_vec();
    null_le.extend_from_slice(&l3);
    let mut null_be = 2u32.to_be_bytes().to_vec();
    null_be.extend_from_slice(&l3);
    let cases: Vec<(LinkType, Vec<u8>, Option<Mac>)> = vec![
        (LinkType::Ethernet, ether(0x0800, &[], &l3), Some(Mac(DEV))),
        (LinkType::Ethernet, ether(0x0800, &[7], &l3), Some(Mac(DEV))),
        (
            LinkType::Ethernet,
            ether(0x0800, &[5, 9], &l3),
            Some(Mac(DEV)),
        ),
        (LinkType::LinuxSll, sll(0x0800, &l3), Some(Mac(DEV))),
        (LinkType::LinuxSll2, sll2(0x0800, &l3), Some(Mac(DEV))),
        (LinkType::RawIp, l3.clone(), None),
        (LinkType::Null, null_le, None),
        (LinkType::Null, null_be.clone(), None),
        (LinkType::Loop, null_be, None),
    ];
    for (link, frame, mac) in cases {
        let p = ip_of(decode(link, &frame, 42).unwrap_or_else(|e| panic!("{link:?}: {e}")));
        assert_eq!(p.src, ip("192.0.2.10"), "{link:?}");
        assert_eq!(p.dst, ip("198.51.100.5"));
        assert_eq!((p.proto, p.src_port, p.dst_port), (proto::TCP, 40000, 104));
        assert_eq!(p.tcp_flags & tcp_flags::SYN, tcp_flags::SYN);
        assert_eq!(p.tcp_seq, 7);
        assert_eq!(p.payload, b"hello");
        assert_eq!(p.ip_len as usize, l3.len());
        assert_eq!(p.src_mac, mac, "{link:?}");
        assert_eq!(p.ts_ns, 42);
    }
    let frame = ether(0x0800, &[5, 9], &l3);
    let tagged = ip_of(decode(LinkType::Ethernet, &frame, 0).unwrap());
    assert_eq!(tagged.vlan, Some(9), "the innermost tag");
    assert_eq!(tagged.dst_mac, Some(Mac(GW)));
}

#[test]
fn ipv6_udp_and_icmp() {
    let l3 = v6_udp(b"q");
    let frame = ether(0x86dd, &[], &l3);
    let p = ip_of(decode(LinkType::Ethernet, &frame, 0).unwrap());
    assert_eq!(p.src, ip("2001:db8::1"));
    assert_eq!((p.proto, p.src_port, p.dst_port), (proto::UDP, 5353, 53));
    assert_eq!(p.payload, b"q");
    let frame = sll2(0x86dd, &l3);
    let p = ip_of(decode(LinkType::LinuxSll2, &frame, 0).unwrap());
    assert_eq!(p.dst, ip("2001:db8::2"));
    let mut icmp = Vec::new();
    PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    let p = ip_of(decode(LinkType::RawIp, &icmp, 0).unwrap());
    assert_eq!(
        (p.proto, p.icmp, p.src_port),
        (proto::ICMP, Some((8, 0)), 0)
    );
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let l3 = v6_udp(b"xy");
    // Insert a hop-by-hop header (8 bytes) before UDP.
    let mut with_ext = l3[..40].to_vec();
    with_ext[6] = 0; // next header: hop-by-hop
    let plen = u16::from_be_bytes([l3[4], l3[5]]) + 8;
    with_ext[4..6].copy_from_slice(&plen.to_be_bytes());
    with_ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    with_ext.extend_from_slice(&l3[40..]);
    let p = ip_of(decode(LinkType::RawIp, &with_ext, 0).unwrap());
    assert_eq!(
        (p.proto, p.dst_port, p.payload),
        (proto::UDP, 53, &b"xy"[..])
    );
    // A non-first fragment: no ports.
    let mut frag = l3[..40].to_vec();
    frag[6] = 44;
    frag[4..6].copy_from_slice(&16u16.to_be_bytes());
    frag.extend_from_slice(&[17, 0, 0, 8 << 3, 0, 0, 0, 1]);
    frag.extend_from_slice(&[0; 8]);
    let p = ip_of(decode(LinkType::RawIp, &frag, 0).unwrap());
    assert!(p.fragment);
    assert_eq!((p.proto, p.src_port, p.dst_port), (proto::UDP, 0, 0));
}

#[test]
fn not_ip_is_named_not_refused() {
    let arp = ether(0x0806, &[], &[0; 28]);
    assert_eq!(
        decode(LinkType::Ethernet, &arp, 0).unwrap(),
        Decoded::NotIp { ethertype: 0x0806 }
    );
}

#[test]
fn malformed_frames_are_errors() {
    let l3 = v4_tcp(b"");
    let mut bad_ihl = l3.clone();
    bad_ihl[0] = 0x43;
    let mut short_total = l3.clone();
    short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
    let mut bad_doff = l3.clone();
    bad_doff[32] = 0x20;
    let cases: Vec<(LinkType, Vec<u8>, &str)> = vec![
        (LinkType::Ethernet, vec![0; 13], "Ethernet header truncated"),
        (
            LinkType::Ethernet,
            ether(0x0800, &[], &l3[..19]),
            "IPv4 header truncated",
        ),
        (
            LinkType::Ethernet,
            ether(0x0800, &[1, 2, 3, 4, 5], &l3),
            "more than 4 VLAN tags",
        ),
        (
            LinkType::Ethernet,
            ether(0x0800, &[], &l3[..30]),
            "TCP header truncated",
        ),
        (LinkType::RawIp, bad_ihl, "header length below 20"),
        (
            LinkType::RawIp,
            short_total,
            "total length below header length",
        ),
        (LinkType::RawIp, bad_doff, "data offset below 20"),
        (LinkType::RawIp, vec![0x50], "neither 4 nor 6"),
        (LinkType::RawIp, vec![], "raw IP header truncated"),
        (
            LinkType::LinuxSll,
            vec![0; 15],
            "Linux SLL header truncated",
        ),
        (
            LinkType::LinuxSll2,
            vec![0; 19],
            "Linux SLL2 header truncated",
        ),
        (LinkType::Null, vec![2, 0, 0], "loopback header truncated"),
        (
            LinkType::Null,
            vec![7, 0, 0, 0, 0x45],
            "neither IPv4 nor IPv6",
        ),
        (
            LinkType::Ethernet,
            ether(0x86dd, &[], &[0x60; 39]),
            "IPv6 header truncated",
        ),
    ];
    for (link, frame, want) in cases {
        let e = decode(link, &frame, 0).unwrap_err().to_string();
        assert!(e.contains(want), "{link:?}: {e} (want {want})");
    }
}

#[test]
fn unsupported_link_types_are_refused_by_name() {
    let e = LinkType::from_linktype(127).unwrap_err().to_string();
    assert!(e.contains("IEEE802_11_RADIOTAP (127)"), "{e}");
    assert_eq!(LinkType::from_linktype(276), Ok(LinkType::LinuxSll2));
    assert_eq!(LinkType::from_linktype(228), Ok(LinkType::RawIp));
}

proptest::proptest! {
    #[test]
    fn any_bytes_decode_without_panic(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..200), link in 0usize..6) {
        let link = [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::RawIp, LinkType::Null, LinkType::Loop][link];
        let _ = decode(link, &frame, 0);
    }

    #[test]
    fn cut_frames_decode_without_panic(cut in 0usize..80) {
        let f = ether(0x0800, &[3], &v4_tcp(b"payload"));
        let _ = decode(LinkType::Ethernet, &f[..cut.min(f.len())], 0);
    }
}
