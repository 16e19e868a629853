//! `dns:` peers in the datapath (issue 21 point 1): a resolver's answer to an enforced device
//! is held (dropped here, its frame in `WG_DNSANS_V1`); one from another host is judged as
//! usual; an address learned for a name allows that name's ports until it expires.

use wardgate_agent::{
    datapath::{convert, dns::LearnedAddrs},
    dns::table::Write,
};
use wardgate_common::Reason;
use wardgate_policy::{
    Direction, Mode, Proto,
    desired::PortRange,
    dns::{DnsRule, ResolverEntry, dns_name_id, lower_dns},
};

use super::*;

fn state() -> wardgate_policy::DesiredState {
    let mut s = state_with(
        2,
        vec![device(1, "pump", &["192.0.2.10"], PUMP_MAC, Mode::Enforce)],
        Vec::new(),
    );
    let dns = |rule_id, proto, port| DnsRule {
        policy_id: 1,
        rule_id,
        direction: Direction::FromDevice,
        name: "api.vendor.example".into(),
        proto,
        ports: Some(PortRange::single(port)),
        idle_timeout_s: 600,
        inspect: false,
    };
    lower_dns(
        &mut s,
        vec![dns(7, Proto::Tcp, 443)],
        vec![ResolverEntry {
            policy_id: 1,
            cidr: "198.51.100.53/32".parse().unwrap(),
        }],
    )
    .unwrap();
    s
}

#[test]
fn a_resolvers_answer_is_held_whole_and_anothers_is_judged_as_usual() {
    let (_pin, mut dp) = datapath("dns-hold");
    dp.apply(&state()).unwrap();
    let mut ring = dp.take_dns_answers().unwrap();
    let answer = frame(GW_MAC, "198.51.100.53:53", "192.0.2.10:40000", L4::Udp);
    let before = dp.stats().unwrap();
    assert_eq!(run(&mut dp, false, &answer), TC_ACT_SHOT);
    let after = dp.stats().unwrap();
    let count = |s: &std::collections::BTreeMap<Reason, u64>, r| s.get(&r).copied().unwrap_or(0);
    assert_eq!(
        count(&after, Reason::HoldDnsAnswer) - count(&before, Reason::HoldDnsAnswer),
        1
    );
    let item = ring.next().expect("the held answer");
    let (r, held) = convert::dns_answer(&item).unwrap();
    assert_eq!(held, answer.as_slice());
    assert_eq!((r.device_id, r.policy_id), (1, 1));
    drop(item);
    // From another host: not held (no entry, no rule: dropped by policy, nothing in the ring).
    let other = frame(GW_MAC, "198.51.100.20:53", "192.0.2.10:40000", L4::Udp);
    assert_eq!(run(&mut dp, false, &other), TC_ACT_SHOT);
    assert!(ring.next().is_none(), "a non-resolver's answer was held");
    let last = dp.stats().unwrap();
    assert_eq!(
        count(&last, Reason::HoldDnsAnswer),
        count(&after, Reason::HoldDnsAnswer)
    );
    assert_eq!(
        count(&last, Reason::DropPolicy) - count(&after, Reason::DropPolicy),
        1
    );
}

#[test]
fn a_learned_address_allows_its_names_ports_until_it_expires() {
    let (pin, mut dp) = datapath("dns-learned");
    dp.apply(&state()).unwrap();
    let mut learned = LearnedAddrs::open(&pin.0).unwrap();
    let syn = |port: u16| {
        frame(
            PUMP_MAC,
            "192.0.2.10:40001",
            &format!("203.0.113.7:{port}"),
            L4::Syn,
        )
    };
    assert_eq!(
        run(&mut dp, true, &syn(443)),
        TC_ACT_SHOT,
        "not learned yet"
    );
    let now = wardgate_agent::datapath::coarse_now_ns();
    let put = |expires_ns| Write::Put {
        device_id: 1,
        addr: "203.0.113.7".parse().unwrap(),
        name_id: dns_name_id("api.vendor.example"),
        expires_ns,
    };
    assert_eq!(learned.apply(&[put(now + 60_000_000_000)]), 0);
    assert_eq!(run(&mut dp, true, &syn(443)), TC_ACT_OK, "learned");
    let other_port = frame(PUMP_MAC, "192.0.2.10:40002", "203.0.113.7:80", L4::Syn);
    assert_eq!(
        run(&mut dp, true, &other_port),
        TC_ACT_SHOT,
        "not the name's port"
    );
    // Expired: a new flow is denied (the one admitted above stays tracked).
    learned.apply(&[put(now - 1)]);
    let again = frame(PUMP_MAC, "192.0.2.10:40003", "203.0.113.7:443", L4::Syn);
    assert_eq!(run(&mut dp, true, &again), TC_ACT_SHOT, "expired");
    // Another device's learned address allows nothing for this one.
    learned.apply(&[Write::Put {
        device_id: 2,
        addr: "203.0.113.8".parse().unwrap(),
        name_id: dns_name_id("api.vendor.example"),
        expires_ns: now + 60_000_000_000,
    }]);
    let foreign = frame(PUMP_MAC, "192.0.2.10:40004", "203.0.113.8:443", L4::Syn);
    assert_eq!(
        run(&mut dp, true, &foreign),
        TC_ACT_SHOT,
        "another device's answer"
    );
}
