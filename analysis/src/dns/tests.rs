use super::*;

/// A message with one question for `name` of type `qt`; `flags` is the header's third and
/// fourth bytes (0x0100 a query with RD, 0x8183 an NXDOMAIN answer).
fn message(flags: u16, name: &str, qt: u16, answers: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34];
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&answers.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qt.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    for _ in 0..answers {
        // A pointer to the question's name, A, IN, TTL 60, 4 bytes.
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    m
}

#[test]
fn a_query_and_its_answers_are_read() {
    let q = parse(&message(0x0100, "Time.Example.COM", qtype::A, 0)).unwrap();
    assert_eq!(q.id, 0x1234);
    assert!(!q.response);
    assert_eq!(q.name, "time.example.com");
    assert_eq!(q.qtype, qtype::A);

    let a = parse(&message(0x8180, "time.example.com", qtype::A, 2)).unwrap();
    assert!(a.response);
    assert_eq!(a.rcode, rcode::NOERROR);
    assert_eq!(a.answers, 2);

    let nx = parse(&message(0x8183, "xkqjzv.example.com", qtype::TXT, 0)).unwrap();
    assert_eq!(nx.rcode, rcode::NXDOMAIN);
    assert_eq!(nx.qtype, qtype::TXT);
}

#[test]
fn odd_label_bytes_are_escaped_so_no_label_passes_for_two() {
    let mut m = message(0x0100, "ab.example.com", qtype::A, 0);
    // "ab" becomes "a." : one label holding a dot.
    m[14] = b'.';
    assert_eq!(parse(&m).unwrap().name, "a\\046.example.com");
    m[13] = 0xff;
    assert_eq!(parse(&m).unwrap().name, "\\255\\046.example.com");
}

#[test]
fn malformed_messages_are_errors_not_panics_or_hangs() {
    let good = message(0x0100, "a.example.com", qtype::A, 0);
    // Every truncation of a good message.
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "{n} bytes parsed");
    }
    assert!(matches!(
        parse(&good[..5]),
        Err(DnsError::Truncated { have: 5 })
    ));

    // A name that is a compression pointer to itself (offset 12), and two pointing at each
    // other: pointers must point backwards, so neither loops.
    let mut self_loop = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    self_loop.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert!(matches!(parse(&self_loop), Err(DnsError::Malformed { .. })));
    let mut pair = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    // Offset 12: label "a", then a pointer to 17; offset 17: label "b", then a pointer to 12.
    pair.extend_from_slice(&[1, b'a', 0xc0, 17, 0, 1, b'b', 0xc0, 12, 0, 1, 0, 1]);
    assert!(parse(&pair).is_err());
    // A pointer forwards, past the end.
    let mut forward = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    forward.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
    assert!(parse(&forward).is_err());

    // A label longer than the bytes left, and one over 63 bytes.
    let mut long = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, b'a'];
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert!(parse(&long).is_err());
    let mut over = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 64];
    over.extend_from_slice(&[b'a'; 64]);
    over.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert!(parse(&over).is_err());

    // Counts no message of this length can hold are refused before parsing.
    let mut counts = good.clone();
    counts[6..12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(parse(&counts), Err(DnsError::Counts { .. })));
    let mut none = good.clone();
    none[5] = 0;
    assert!(matches!(parse(&none), Err(DnsError::NoQuestion)));

    // Every single-byte corruption of a good answer, and every prefix of it: no panic.
    let answer = message(0x8180, "a.example.com", qtype::A, 2);
    for i in 0..answer.len() {
        for b in [0x00, 0x3f, 0x40, 0xc0, 0xff] {
            let mut m = answer.clone();
            m[i] = b;
            let _ = parse(&m);
        }
        let _ = parse(&answer[..i]);
    }
}

#[test]
fn registered_domains_keep_two_labels_or_three_under_two_level_suffixes() {
    assert_eq!(registered_domain("a.b.tunnel.example.com"), "example.com");
    assert_eq!(registered_domain("example.com"), "example.com");
    assert_eq!(registered_domain("com"), "com");
    assert_eq!(registered_domain("x.y.trust.nhs.uk"), "trust.nhs.uk");
    assert_eq!(registered_domain("www.example.co.uk"), "example.co.uk");
    assert_eq!(registered_domain("co.uk"), "co.uk");
    assert_eq!(registered_domain(""), "");
}

#[test]
fn entropy_is_bits_per_byte() {
    assert_eq!(entropy(""), 0.0);
    assert_eq!(entropy("aaaa"), 0.0);
    assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    assert!(entropy("nbswy3dpeb3w64tmmqqq2ztpn5zc4") > 3.5);
    assert!(entropy("time") < 2.1);
}

#[test]
fn packets_to_and_from_port_53_of_a_device_are_events() {
    use crate::mac::Mac;
    let mac: Mac = "02:00:00:00:00:0a".parse().unwrap();
    let router: Mac = "02:00:00:00:00:01".parse().unwrap();
    let mut devices = Devices::discover();
    devices.observe(Some(mac), "192.0.2.10".parse().unwrap());
    let q = message(0x0100, "a.example.com", qtype::A, 0);
    let pkt = |src_mac, src: &str, sport, dst_mac, dst: &str, dport, payload| Packet {
        ts_ns: 7,
        src_mac: Some(src_mac),
        dst_mac: Some(dst_mac),
        vlan: None,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: proto::UDP,
        src_port: sport,
        dst_port: dport,
        icmp: None,
        tcp_flags: 0,
        tcp_seq: 0,
        ip_len: 0,
        fragment: false,
        payload,
    };
    let query = pkt(mac, "192.0.2.10", 40000, router, "192.0.2.53", 53, &q);
    let e = event(&query, &devices).unwrap().unwrap();
    assert_eq!(
        e.device.name,
        devices.resolve(Some(mac), e.device_addr).unwrap().name
    );
    assert_eq!(e.resolver, "192.0.2.53".parse::<IpAddr>().unwrap());
    assert_eq!(e.rcode, None);
    assert_eq!(e.name, "a.example.com");

    let nx = message(0x8183, "a.example.com", qtype::A, 0);
    let answer = pkt(router, "192.0.2.53", 53, mac, "192.0.2.10", 40000, &nx);
    let e = event(&answer, &devices).unwrap().unwrap();
    assert_eq!(e.device_addr, "192.0.2.10".parse::<IpAddr>().unwrap());
    assert_eq!(e.rcode, Some(rcode::NXDOMAIN));

    // Not port 53, or no device at the client end: nothing. Bad bytes: an error.
    let other = pkt(mac, "192.0.2.10", 40000, router, "192.0.2.53", 5353, &q);
    assert!(event(&other, &devices).is_none());
    let stranger = pkt(router, "192.0.2.99", 40000, mac, "192.0.2.53", 53, &q);
    assert!(event(&stranger, &devices).is_none());
    let bad = pkt(mac, "192.0.2.10", 40000, router, "192.0.2.53", 53, &q[..7]);
    assert!(event(&bad, &devices).unwrap().is_err());

    // TCP: one whole length-prefixed message is read; a part of one is not an event.
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut tcp = pkt(mac, "192.0.2.10", 40000, router, "192.0.2.53", 53, &framed);
    tcp.proto = proto::TCP;
    assert_eq!(event(&tcp, &devices).unwrap().unwrap().proto, proto::TCP);
    tcp.payload = &framed[..10];
    assert!(event(&tcp, &devices).is_none());
}

proptest::proptest! {
    /// Any bytes, and any bytes after a plausible header (one question, few records): an
    /// answer or an error, never a panic or a hang.
    #[test]
    fn any_bytes_parse_or_fail(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        counts in proptest::collection::vec(0u8..3, 4),
    ) {
        let _ = parse(&bytes);
        let mut m = vec![0x12, 0x34, 0x81, 0x83, 0, counts[0], 0, counts[1], 0, counts[2], 0, counts[3]];
        m.extend_from_slice(&bytes);
        if let Ok(msg) = parse(&m) {
            proptest::prop_assert!(msg.name.len() <= 255 * 4);
            proptest::prop_assert!(msg.name.ends_with(registered_domain(&msg.name)));
        }
    }
}
