//! The DNS detectors on synthetic DNS messages: a tunnel (iodine-like: long base32 labels asked
//! as NULL/TXT; dnscat-like: hex labels) and a DGA's NXDOMAIN burst each raise one finding; a
//! device's ordinary lookups, a listing of many short names and reverse lookups raise nothing.

use super::*;
use crate::dns::{DnsEvent, qtype, rcode};

const S: u64 = NS;

fn laptop() -> DeviceRef {
    dev("laptop", "02:00:00:00:00:77")
}

/// One DNS message of `d` to the resolver: a query (`rc` None) or an answer.
fn msg(d: &DeviceRef, t_ns: u64, name: &str, qt: u16, rc: Option<u8>) -> DnsEvent {
    DnsEvent {
        ts_ns: t_ns,
        device: d.clone(),
        device_addr: ip("192.0.2.10"),
        resolver: ip("198.51.100.53"),
        proto: proto::UDP,
        name: name.into(),
        qtype: qt,
        rcode: rc,
        answers: u16::from(rc == Some(rcode::NOERROR)),
    }
}

/// A query and its answer.
fn lookup(d: &DeviceRef, t_ns: u64, name: &str, qt: u16, rc: u8) -> [DnsEvent; 2] {
    [
        msg(d, t_ns, name, qt, None),
        msg(d, t_ns + 2 * MS, name, qt, Some(rc)),
    ]
}

/// Deterministic random text over `alphabet`.
fn random(seed: &mut u64, len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(alphabet[(*seed >> 33) as usize % alphabet.len()])
        })
        .collect()
}

const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const HEX: &[u8] = b"0123456789abcdef";

fn run_dns(site: SiteFacts, events: &[DnsEvent]) -> Vec<Finding> {
    let cfg = DetectConfig::default();
    run_observed(
        baseline_free(&cfg),
        site,
        Baselines::default(),
        cfg.aggregate,
        &[],
        &[],
        events,
    )
}

#[test]
fn an_iodine_like_tunnel_is_one_finding_with_its_domain() {
    // The pump sends 45 chunks in two minutes, each a new 52-character base32 label under
    // t.exfil.co.uk, asked as NULL (iodine's default) with a TXT now and then.
    let mut seed = 1;
    let mut events = Vec::new();
    for i in 0..45u64 {
        let name = format!("{}.t.exfil.co.uk", random(&mut seed, 52, BASE32));
        let qt = if i % 5 == 0 { qtype::TXT } else { qtype::NULL };
        events.extend(lookup(
            &pump(),
            i * 2 * S + 7 * MS,
            &name,
            qt,
            rcode::NOERROR,
        ));
    }
    // Its ordinary lookups go on beside it.
    for m in 0..5u64 {
        events.extend(lookup(
            &pump(),
            m * 30 * S,
            "pacs.hospital.org",
            qtype::A,
            0,
        ));
    }
    events.sort_by_key(|e| e.ts_ns);
    let f = run_dns(site(), &events);
    let t = by(&f, "dns_tunnel");
    assert_eq!(t.len(), 1, "{f:#?}");
    let t = &t[0];
    assert_eq!(t.device.name, "pump-1");
    assert_eq!(t.peer, Some(ip("198.51.100.53")));
    assert_eq!(t.severity, Severity::High);
    assert_eq!(t.technique.id, "T1071.004");
    assert_eq!(t.technique.tactic(), ("TA0011", "Command and Control"));
    // Raised at 20 names (a site device's threshold), again at 40: one finding, count 2.
    assert_eq!(t.count, 2);
    assert_eq!(t.evidence.names[0], "exfil.co.uk");
    assert!(t.evidence.names[1].ends_with(".t.exfil.co.uk"));
    assert!(t.summary.contains("exfil.co.uk"), "{}", t.summary);
    let metric = |n: &str| {
        t.evidence
            .metrics
            .iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .observed
    };
    // The aggregated finding keeps the latest evidence: 40 names in the window.
    assert_eq!(metric("distinct_names"), 40.0);
    assert_eq!(metric("mean_first_label_length"), 52.0);
    assert!(metric("mean_entropy_bits") >= 3.5);
    assert_eq!(metric("tunnel_type_share"), 1.0);
    assert!(by(&f, "dns_nxdomain").is_empty());
}

#[test]
fn a_dnscat_like_tunnel_from_a_host_is_raised_at_the_host_threshold() {
    // dnscat2: hex labels straight under the domain, CNAME/MX/TXT. A host (no site): 30 names.
    let mut seed = 7;
    let names: Vec<String> = (0..30)
        .map(|_| format!("{}.c2.example.net", random(&mut seed, 40, HEX)))
        .collect();
    let events: Vec<DnsEvent> = names
        .iter()
        .enumerate()
        .map(|(i, n)| msg(&laptop(), i as u64 * 3 * S, n, 5, None))
        .collect();
    let f = run_dns(SiteFacts::default(), &events[..29]);
    assert!(
        by(&f, "dns_tunnel").is_empty(),
        "29 names are under the host threshold"
    );
    let f = run_dns(SiteFacts::default(), &events);
    let t = by(&f, "dns_tunnel");
    assert_eq!(t.len(), 1, "{f:#?}");
    assert_eq!(t[0].evidence.names[0], "example.net");
    assert_eq!(t[0].severity, Severity::Medium);
}

#[test]
fn ordinary_lookups_many_short_names_and_reverse_lookups_raise_nothing() {
    let mut events = Vec::new();
    // A pump's day: its servers, NTP and an update host every minute, some AAAA.
    for m in 0..24 * 60u64 {
        let t = m * 60 * S;
        for (i, name) in [
            "pacs.hospital.org",
            "pump-server.hospital.org",
            "ntp.ubuntu.com",
            "0.pool.ntp.org",
            "update.vendor-medical.com",
        ]
        .iter()
        .enumerate()
        {
            events.extend(lookup(&pump(), t + i as u64 * MS * 10, name, qtype::A, 0));
            events.extend(lookup(
                &pump(),
                t + i as u64 * MS * 10 + 5 * MS,
                name,
                qtype::AAAA,
                0,
            ));
        }
    }
    // An inventory sweep: 60 distinct short names under one domain in a minute (no data in them).
    for i in 0..60u64 {
        events.extend(lookup(
            &pump(),
            3600 * S + i * S,
            &format!("ws{i}.wards.hospital.org"),
            qtype::A,
            0,
        ));
    }
    // Reverse lookups of 60 peers (a monitoring host would do this).
    for i in 0..60u64 {
        events.extend(lookup(
            &pump(),
            7200 * S + i * S,
            &format!("{i}.2.0.192.in-addr.arpa"),
            12,
            0,
        ));
    }
    // A retired server: the same missing name, asked every few seconds.
    for i in 0..100u64 {
        events.extend(lookup(
            &pump(),
            9000 * S + i * 3 * S,
            "old-pacs.hospital.org",
            qtype::A,
            rcode::NXDOMAIN,
        ));
    }
    events.sort_by_key(|e| e.ts_ns);
    let f = run_dns(site(), &events);
    assert!(by(&f, "dns_tunnel").is_empty(), "{f:#?}");
    assert!(by(&f, "dns_nxdomain").is_empty(), "{f:#?}");
}

/// `n` random names answered NXDOMAIN, one every `every_ns`, each under its own .com domain.
fn dga(d: &DeviceRef, n: u64, every_ns: u64) -> Vec<DnsEvent> {
    let mut seed = 42;
    (0..n)
        .flat_map(|i| {
            let name = format!(
                "{}.com",
                random(&mut seed, 14, b"abcdefghijklmnopqrstuvwxyz")
            );
            lookup(d, i * every_ns, &name, qtype::A, rcode::NXDOMAIN)
        })
        .collect()
}

#[test]
fn a_dga_burst_of_nxdomains_is_raised_and_a_few_are_not() {
    // A host: 25 generated names in 25 s, all NXDOMAIN.
    let f = run_dns(SiteFacts::default(), &dga(&laptop(), 25, S));
    let nx = by(&f, "dns_nxdomain");
    assert_eq!(nx.len(), 1, "{f:#?}");
    let nx = &nx[0];
    assert_eq!(nx.device.name, "laptop");
    assert_eq!(nx.technique.id, "T1568.002");
    assert_eq!(nx.technique.tactic(), ("TA0011", "Command and Control"));
    assert_eq!(nx.evidence.metrics[0].name, "nxdomain_names");
    assert_eq!(nx.evidence.metrics[0].observed, 20.0);
    assert_eq!(nx.evidence.metrics[0].threshold, Some(20.0));
    assert_eq!(nx.evidence.names.len(), 8);
    assert!(nx.evidence.names.iter().all(|n| n.ends_with(".com")));
    assert_eq!(nx.peer, Some(ip("198.51.100.53")));
    // 19 for a host is under its threshold.
    assert!(
        by(
            &run_dns(SiteFacts::default(), &dga(&laptop(), 19, S)),
            "dns_nxdomain"
        )
        .is_empty()
    );

    // A site device: 10 raise it, 9 do not.
    let ten = by(&run_dns(site(), &dga(&pump(), 10, S)), "dns_nxdomain");
    assert_eq!(ten.len(), 1);
    assert_eq!(ten[0].severity, Severity::High);
    assert!(by(&run_dns(site(), &dga(&pump(), 9, S)), "dns_nxdomain").is_empty());
    // 25 spread over 10 minutes: never 10 in one 60 s window.
    assert!(by(&run_dns(site(), &dga(&pump(), 25, 25 * S)), "dns_nxdomain").is_empty());
}
