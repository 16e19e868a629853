//! What a DNS answer teaches the gateway's `dns:` rules (issue 21 point 1): the chain of names
//! from the question through its CNAMEs, and the addresses at the end of it, each with the
//! smallest TTL on its way. Only records on the question's chain count: an answer for
//! `ads.example` carrying an extra A record for `api.vendor.example` teaches nothing about the
//! vendor. Pure; any bytes give a chain or an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;

use super::{DnsError, name_text, parse};

/// CNAME links followed at most (resolvers stop near here too; a loop ends at it).
pub const MAX_CHAIN: usize = 8;

/// A response's question, its CNAME chain and the addresses at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The question's name, then each CNAME target in order; lower case, no root dot.
    pub names: Vec<String>,
    /// Addresses with the smallest TTL of the records that led to them (seconds).
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Reads a response (the UDP payload). A query, or an answer with an error code, is an empty
/// chain of addresses (nothing to learn), not an error.
pub fn chain(bytes: &[u8]) -> Result<Chain, DnsError> {
    let head = parse(bytes)?;
    let mut out = Chain {
        names: vec![head.name.clone()],
        addrs: Vec::new(),
    };
    if !head.response || head.rcode != super::rcode::NOERROR {
        return Ok(out);
    }
    let msg = simple_dns::Packet::parse(bytes).map_err(|source| DnsError::Malformed { source })?;
    let records: Vec<(String, u32, &RData<'_>)> = msg
        .answers
        .iter()
        .map(|r| (name_text(r.name.as_bytes()), r.ttl, &r.rdata))
        .collect();
    let mut ttl = u32::MAX;
    let mut at = head.name;
    for _ in 0..=MAX_CHAIN {
        let mut next = None;
        for (owner, rec_ttl, rdata) in &records {
            if *owner != at {
                continue;
            }
            match rdata {
                RData::A(a) => out
                    .addrs
                    .push((IpAddr::V4(Ipv4Addr::from(a.address)), ttl.min(*rec_ttl))),
                RData::AAAA(a) => out
                    .addrs
                    .push((IpAddr::V6(Ipv6Addr::from(a.address)), ttl.min(*rec_ttl))),
                RData::CNAME(c) if next.is_none() => {
                    next = Some((name_text(c.0.as_bytes()), *rec_ttl));
                }
                _ => {}
            }
        }
        let Some((target, rec_ttl)) = next else {
            break;
        };
        if out.names.contains(&target) || out.names.len() > MAX_CHAIN {
            break;
        }
        ttl = ttl.min(rec_ttl);
        out.names.push(target.clone());
        at = target;
    }
    Ok(out)
}

/// What one answer teaches a device whose policy names `patterns` (name id, exact name or
/// `*.suffix`): (name id, address, TTL) for every pattern that covers a name of the chain.
pub fn learn(chain: &Chain, patterns: &[(u32, &str)]) -> Vec<(u32, IpAddr, u32)> {
    let mut out = Vec::new();
    for (id, pattern) in patterns {
        if chain
            .names
            .iter()
            .any(|n| wardgate_policy::dns::name_matches(pattern, n))
        {
            out.extend(chain.addrs.iter().map(|(a, ttl)| (*id, *a, *ttl)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use simple_dns::{
        CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE,
        rdata::{A, AAAA, CNAME, RData},
    };

    use super::*;

    fn answer(question: &str, records: &[(&str, u32, RData<'static>)]) -> Vec<u8> {
        let mut p = Packet::new_reply(0x4242);
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
        p.build_bytes_vec_compressed().unwrap()
    }

    fn a(s: &str) -> RData<'static> {
        RData::A(A::from(s.parse::<Ipv4Addr>().unwrap()))
    }

    fn cname(s: &'static str) -> RData<'static> {
        RData::CNAME(CNAME(Name::new_unchecked(s)))
    }

    #[test]
    fn cname_chains_are_followed_with_the_smallest_ttl() {
        let bytes = answer(
            "API.vendor.example",
            &[
                ("api.vendor.example", 300, cname("edge.cdn.example")),
                ("edge.cdn.example", 60, cname("n1.edge.cdn.example")),
                ("n1.edge.cdn.example", 120, a("198.51.100.7")),
                ("n1.edge.cdn.example", 20, a("198.51.100.8")),
                // Off the chain: never learned.
                ("other.example", 600, a("203.0.113.9")),
            ],
        );
        let c = chain(&bytes).unwrap();
        assert_eq!(
            c.names,
            [
                "api.vendor.example",
                "edge.cdn.example",
                "n1.edge.cdn.example"
            ]
        );
        let want: Vec<(IpAddr, u32)> = vec![
            ("198.51.100.7".parse().unwrap(), 60),
            ("198.51.100.8".parse().unwrap(), 20),
        ];
        assert_eq!(c.addrs, want);
        // Exact names and wildcards match any name of the chain, case-insensitively.
        let learned = learn(
            &c,
            &[
                (1, "api.vendor.example"),
                (2, "*.cdn.example"),
                (3, "x.example"),
            ],
        );
        let ids: Vec<u32> = learned.iter().map(|l| l.0).collect();
        assert_eq!(ids, [1, 1, 2, 2]);
    }

    #[test]
    fn loops_errors_and_queries_teach_nothing() {
        let looped = answer(
            "a.example",
            &[
                ("a.example", 60, cname("b.example")),
                ("b.example", 60, cname("a.example")),
                ("b.example", 60, a("198.51.100.1")),
            ],
        );
        let c = chain(&looped).unwrap();
        assert_eq!(c.names, ["a.example", "b.example"]);
        assert_eq!(c.addrs.len(), 1);
        let mut nx = answer("a.example", &[("a.example", 60, a("198.51.100.1"))]);
        nx[3] |= 3; // NXDOMAIN
        assert!(chain(&nx).unwrap().addrs.is_empty());
        let mut query = answer("a.example", &[]);
        query[2] &= 0x7f;
        assert!(chain(&query).unwrap().addrs.is_empty());
        let v6 = answer(
            "a.example",
            &[(
                "a.example",
                5,
                RData::AAAA(AAAA::from("2001:db8::5".parse::<Ipv6Addr>().unwrap())),
            )],
        );
        assert_eq!(
            chain(&v6).unwrap().addrs,
            [("2001:db8::5".parse().unwrap(), 5)]
        );
        for n in 0..looped.len() {
            let _ = chain(&looped[..n]);
        }
    }
}
