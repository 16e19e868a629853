use etherparse::PacketBuilder;
use simple_dns::{
    CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE,
    rdata::{A, CNAME, RData},
};
use wardgate_policy::{
    Direction,
    dns::{DnsNameEntry, DnsRules, ResolverEntry, dns_name_id},
    lower::lower,
};

use super::*;

const S: u64 = 1_000_000_000;

fn cfg() -> DnsConfig {
    DnsConfig {
        ttl_floor_s: 10,
        ttl_ceiling_s: 600,
        max_addrs_per_device: 3,
    }
}

fn state() -> DesiredState {
    let mut s = lower("gw", 1, Vec::new(), Vec::new()).unwrap();
    let name = |n: &str| DnsNameEntry {
        policy_id: 7,
        direction: Direction::FromDevice,
        name: n.into(),
        name_id: dns_name_id(n),
        peer_set: 1,
    };
    s.dns = DnsRules {
        resolvers: vec![ResolverEntry {
            policy_id: 7,
            cidr: "198.51.100.53/32".parse().unwrap(),
        }],
        names: vec![name("api.vendor.example"), name("*.cdn.example")],
    };
    s
}

/// An answer frame as the egress hook holds it: resolver -> device, UDP from port 53.
fn frame(from: [u8; 4], question: &str, records: &[(&str, u32, RData<'static>)]) -> Vec<u8> {
    let mut p = Packet::new_reply(7);
    p.questions.push(Question::new(
        Name::new_unchecked(question).into_owned(),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    for (owner, ttl, rdata) in records {
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(owner).into_owned(),
            CLASS::IN,
            *ttl,
            rdata.clone(),
        ));
    }
    let dns = p.build_bytes_vec_compressed().unwrap();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0x0a])
        .ipv4(from, [192, 0, 2, 10], 64)
        .udp(53, 40000);
    let mut out = Vec::with_capacity(b.size(dns.len()));
    b.write(&mut out, &dns).unwrap();
    out
}

fn a(s: &str) -> RData<'static> {
    RData::A(A::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
}

fn puts(w: &[Write]) -> Vec<(IpAddr, u32, u64)> {
    w.iter()
        .filter_map(|w| match *w {
            Write::Put {
                addr,
                name_id,
                expires_ns,
                ..
            } => Some((addr, name_id, expires_ns)),
            Write::Remove { .. } => None,
        })
        .collect()
}

const RESOLVER: [u8; 4] = [198, 51, 100, 53];

#[test]
fn a_cname_chain_teaches_the_name_it_started_from_within_the_ttl_bounds() {
    let mut t = Table::default();
    let f = frame(
        RESOLVER,
        "api.vendor.example",
        &[
            (
                "api.vendor.example",
                3600,
                RData::CNAME(CNAME(Name::new_unchecked("edge.other.example"))),
            ),
            ("edge.other.example", 2, a("203.0.113.5")),
            ("edge.other.example", 90_000, a("203.0.113.6")),
        ],
    );
    let w = t.answer(&cfg(), &state(), 1, 7, &f, 100 * S).unwrap();
    let id = dns_name_id("api.vendor.example");
    assert_eq!(
        puts(&w),
        [
            // TTL 2 raised to the floor (10 s), 3600 (the CNAME's, smaller than 90,000)
            // lowered to the ceiling (600 s).
            ("203.0.113.5".parse().unwrap(), id, 110 * S),
            ("203.0.113.6".parse().unwrap(), id, 700 * S),
        ]
    );
}

#[test]
fn wildcards_cover_names_under_their_suffix_only() {
    let mut t = Table::default();
    let f = frame(
        RESOLVER,
        "eu.cdn.example",
        &[("eu.cdn.example", 60, a("203.0.113.7"))],
    );
    let w = t.answer(&cfg(), &state(), 1, 7, &f, 0).unwrap();
    assert_eq!(puts(&w)[0].1, dns_name_id("*.cdn.example"));
    let f = frame(
        RESOLVER,
        "cdn.example",
        &[("cdn.example", 60, a("203.0.113.8"))],
    );
    assert_eq!(
        t.answer(&cfg(), &state(), 1, 7, &f, 0),
        Err(Ignored::NoName)
    );
    let f = frame(
        RESOLVER,
        "evilcdn.example",
        &[("evilcdn.example", 60, a("203.0.113.8"))],
    );
    assert_eq!(
        t.answer(&cfg(), &state(), 1, 7, &f, 0),
        Err(Ignored::NoName)
    );
}

#[test]
fn answers_from_anyone_but_a_resolver_teach_nothing() {
    let mut t = Table::default();
    let f = frame(
        [198, 51, 100, 20],
        "api.vendor.example",
        &[("api.vendor.example", 60, a("203.0.113.9"))],
    );
    assert_eq!(
        t.answer(&cfg(), &state(), 1, 7, &f, 0),
        Err(Ignored::NotResolver)
    );
    // Nor from the resolver of another policy.
    let f = frame(
        RESOLVER,
        "api.vendor.example",
        &[("api.vendor.example", 60, a("203.0.113.9"))],
    );
    assert_eq!(
        t.answer(&cfg(), &state(), 1, 8, &f, 0),
        Err(Ignored::NotResolver)
    );
    assert_eq!(t.len_of(1), 0);
    assert!(!is_resolver(&state(), 7, "198.51.100.20".parse().unwrap()));
}

#[test]
fn each_device_holds_at_most_its_bound_and_the_soonest_to_expire_go_first() {
    let mut t = Table::default();
    let id = dns_name_id("api.vendor.example");
    let addr = |i: u8| IpAddr::from([203, 0, 113, i]);
    let w = t.learn(
        &cfg(),
        1,
        &[(id, addr(1), 100), (id, addr(2), 20), (id, addr(3), 300)],
        0,
    );
    assert_eq!(puts(&w).len(), 3);
    // A fourth address: the one expiring first (addr 2) makes room.
    let w = t.learn(&cfg(), 1, &[(id, addr(4), 200)], 0);
    assert_eq!(
        w,
        [
            Write::Put {
                device_id: 1,
                addr: addr(4),
                name_id: id,
                expires_ns: 200 * S
            },
            Write::Remove {
                device_id: 1,
                addr: addr(2)
            }
        ]
    );
    assert_eq!(t.len_of(1), 3);
    // Another device has its own bound.
    t.learn(&cfg(), 2, &[(id, addr(1), 100)], 0);
    assert_eq!((t.len_of(1), t.len_of(2)), (3, 1));
    // A burst larger than the bound keeps the bound, and never writes what it removes.
    let burst: Vec<_> = (10..20)
        .map(|i| (id, addr(i), 500 + u32::from(i)))
        .collect();
    let w = t.learn(&cfg(), 3, &burst, 0);
    assert_eq!(t.len_of(3), 3);
    assert_eq!(puts(&w).len(), 3);
    // Expired entries are swept.
    let gone = t.sweep(150 * S);
    assert!(gone.contains(&Write::Remove {
        device_id: 1,
        addr: addr(1)
    }));
    assert!(gone.contains(&Write::Remove {
        device_id: 2,
        addr: addr(1)
    }));
    assert_eq!((t.len_of(1), t.len_of(2)), (2, 0));
}
