//! The DNS-answer rows of `cargo xtask bench datapath` (issue 21 point 1): what holding a
//! resolver's answer costs the datapath (`wg_egress` through BPF_PROG_TEST_RUN, a batch that
//! fits the ring, next to `wg_pass`), and what the agent's learner spends per answer (parse,
//! learn, map write, checksum, AF_PACKET send), timed one by one over every held record: the
//! hold-and-reinject latency an answer gains is the sum (the ring's wakeup of the learner, a
//! few µs of scheduling, not included), and one learner thread sustains 1 / its mean.
//! Runs in a network namespace of its own (the re-injected frames go to its loopback).

use std::time::Instant;

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::PacketBuilder;
use wardgate_agent::{
    config::DnsConfig,
    datapath::{Datapath, dns::LearnedAddrs},
    dns::Learner,
};
use wardgate_common::{Reason, program_names};
use wardgate_policy::{
    DesiredState, Direction, Proto,
    desired::PortRange,
    dns::{DnsRule, ResolverEntry, lower_dns},
};

/// Answers per batch (the ring holds about 250 held frames).
const BATCH: u32 = 200;
const BATCHES: usize = 25;

/// A DNS answer for `api.vendor.example` (one A record, `addr`).
fn answer(addr: [u8; 4]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    for l in ["api", "vendor", "example"] {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&addr);
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], super::MAC)
        .ipv4([198, 51, 100, 53], [192, 0, 2, 10], 63)
        .udp(53, 40000);
    let mut out = Vec::new();
    b.write(&mut out, &m).unwrap();
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn rows(dp: &mut Datapath, pin: &std::path::Path, mut state: DesiredState) {
    // Safety: unshare of this thread's network namespace; nothing else shares it.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(up, "lo up in the bench namespace");
    lower_dns(
        &mut state,
        vec![DnsRule {
            policy_id: 1,
            rule_id: 9_999,
            direction: Direction::FromDevice,
            name: "api.vendor.example".into(),
            proto: Proto::Tcp,
            ports: Some(PortRange::single(443)),
            idle_timeout_s: 600,
            inspect: false,
        }],
        vec![ResolverEntry {
            policy_id: 1,
            cidr: "198.51.100.53/32".parse().unwrap(),
        }],
    )
    .unwrap();
    state.generation += 1;
    dp.apply(&state).unwrap();
    let mut ring = dp.take_dns_answers().unwrap();
    let mut learner = Learner::new(DnsConfig::default(), LearnedAddrs::open(pin).unwrap())
        .expect("AF_PACKET socket");
    let frame = answer([203, 0, 113, 7]);
    let (mut held_ns, mut pass_ns, mut agent_ns) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    let mut agent_total = 0f64;
    for _ in 0..BATCHES {
        for (prog, out) in [
            (program_names::EGRESS, &mut held_ns),
            (program_names::PASS, &mut pass_ns),
        ] {
            let r = dp
                .classifier(prog)
                .unwrap()
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    repeat: BATCH,
                    ..Default::default()
                })
                .unwrap();
            if prog == program_names::EGRESS {
                assert_eq!(r.return_value, 2, "held answers are dropped (TC_ACT_SHOT)");
            }
            out.push(r.duration.as_nanos() as f64);
        }
        let mut n = 0;
        while let Some(item) = ring.next() {
            let t = Instant::now();
            learner.handle(&item, Some(&state));
            let ns = t.elapsed().as_nanos() as f64;
            agent_total += ns;
            agent_ns.push(ns);
            n += 1;
        }
        assert_eq!(n, BATCH, "every held answer reached the learner");
    }
    let stats = dp.stats().unwrap();
    let held = stats.get(&Reason::HoldDnsAnswer).copied().unwrap_or(0);
    let unlearned = stats.get(&Reason::PassDnsUnlearned).copied().unwrap_or(0);
    assert_eq!(learner.counts.sent, held, "every held answer was sent on");
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 0.5)
    };
    let (h, p) = (med(&mut held_ns), med(&mut pass_ns));
    agent_ns.sort_by(f64::total_cmp);
    let (a50, a99) = (percentile(&agent_ns, 0.5), percentile(&agent_ns, 0.99));
    println!(
        "\n### DNS answers held for learning (`dns:` peers; {} answers, {BATCHES} batches of {BATCH})\n",
        agent_ns.len()
    );
    println!("| what | median | p99 |\n|---|---:|---:|");
    println!(
        "| datapath: a resolver's answer held (`wg_egress`, copied to the ring) | {h:.0} ns | - |"
    );
    println!("| datapath: trivial program (`wg_pass`), same runs | {p:.0} ns | - |");
    println!(
        "| agent: one answer learned, written and re-injected (parse, map write, checksum, send) | {:.1} µs | {:.1} µs |",
        a50 / 1e3,
        a99 / 1e3
    );
    println!(
        "| added to an answer's way (datapath + agent; the ring's wakeup not included) | {:.1} µs | {:.1} µs |",
        (h + a50) / 1e3,
        (h + a99) / 1e3
    );
    println!(
        "\nanswers/s one learner thread sustains: {:.0} (1 / mean agent time; held {held}, \
         passed unlearned {unlearned}, sent on {}, send failures {}); {:.1} s",
        agent_ns.len() as f64 / (agent_total / 1e9),
        learner.counts.sent,
        learner.counts.send_failed,
        started.elapsed().as_secs_f64()
    );
}
