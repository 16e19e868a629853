//! `cargo xtask bench dns-names`: what the live DNS-name watcher (`agent/src/dns/names.rs`,
//! issue 21 point 2) costs.
//!
//! 1. Answers/s of its per-answer path, pure: decoding the frame (the floor: every frame the
//!    kernel's filter lets through pays it) against decoding it and learning its answer
//!    (`NameTable::observe_packet`: parse, then insert into a table kept across rounds, so
//!    entries are replaced as in a steady state). 100,000 answers from a resolver to 250
//!    devices, two A records each; 11 rounds interleaved (A B, B A, ...).
//! 2. Live, in a network namespace of its own (root): 100,000 answers sent as raw frames out of
//!    one end of a veth pair, in bursts of 64 with 0.5 ms pauses (about 100,000/s), with the
//!    real watcher (`dns::names::run`, on a thread and runtime of its own) on that interface
//!    and without it, interleaved over 5 rounds: the sender's CPU per frame (the kernel's copy
//!    to the watcher's socket and its filter are charged there), the watcher's CPU per answer
//!    and the answers it learned of those sent (the rest dropped by a full socket buffer).
//!
//! Prints tables: medians with (min-max).

use std::{
    hint::black_box,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use wardgate_analysis::{
    Decoded, LinkType, decode,
    dns::names::{NameTable, NameTableConfig},
};
use wardgate_testkit::stats::median_min_max;

const ANSWERS: usize = 100_000;
const DEVICES: u32 = 250;
const NAMES: usize = 2_000;
const ROUNDS: usize = 11;
const LIVE_ROUNDS: usize = 5;
const BURST: usize = 64;
const PAUSE: Duration = Duration::from_micros(500);
const RESOLVER: [u8; 4] = [198, 51, 100, 53];
const IF_OUT: &str = "wgbn-a";
const IF_IN: &str = "wgbn-b";

/// Answer `i`: device 192.0.2.(1 + i % 250) is told that `svc-N.vendor.example` is two
/// addresses of 203.0.113.0/24.
fn answer(i: usize) -> Vec<u8> {
    let n = i % NAMES;
    let mut m = vec![(i >> 8) as u8, i as u8, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
    let first = format!("svc-{n}");
    for l in [first.as_str(), "vendor", "example"] {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    for k in 0..2 {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(&[203, 0, 113, ((2 * n + k) % 254 + 1) as u8]);
    }
    let device = [192, 0, 2, (1 + i as u32 % DEVICES) as u8];
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0x0a])
        .ipv4(RESOLVER, device, 63)
        .udp(53, 40_000 + (i % 20_000) as u16);
    let mut out = Vec::new();
    b.write(&mut out, &m).unwrap();
    out
}

fn is_resolver(a: std::net::IpAddr) -> bool {
    a == Ipv4Addr::from(RESOLVER)
}

/// One pass over `frames`: answers/s.
fn pass(frames: &[Vec<u8>], table: Option<&mut NameTable>) -> f64 {
    let started = Instant::now();
    match table {
        None => {
            for (i, f) in frames.iter().enumerate() {
                black_box(decode(LinkType::Ethernet, f, i as u64).is_ok());
            }
        }
        Some(t) => {
            for (i, f) in frames.iter().enumerate() {
                if let Ok(Decoded::Ip(p)) = decode(LinkType::Ethernet, f, i as u64) {
                    black_box(t.observe_packet(&p, is_resolver));
                }
            }
        }
    }
    frames.len() as f64 / started.elapsed().as_secs_f64()
}

fn row(what: &str, samples: &[f64]) {
    let (m, lo, hi) = median_min_max(samples);
    println!(
        "| {what:<44} | {:>9.0} ({:.0}-{:.0}) | {:>6.0} |",
        m,
        lo,
        hi,
        1e9 / m
    );
}

fn pure(frames: &[Vec<u8>]) {
    let mut table = NameTable::new(NameTableConfig::default());
    pass(frames, Some(&mut table)); // untimed: the table at its steady size
    let (mut floor, mut learn) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        if r % 2 == 0 {
            floor.push(pass(frames, None));
            learn.push(pass(frames, Some(&mut table)));
        } else {
            learn.push(pass(frames, Some(&mut table)));
            floor.push(pass(frames, None));
        }
    }
    let s = table.stats();
    println!(
        "\n{ANSWERS} answers, {DEVICES} devices, {NAMES} names, {ROUNDS} rounds interleaved; \
         table holds {} addresses (bound {}), {} answers learned in all\n",
        table.len(),
        NameTableConfig::default().total,
        s.answers
    );
    println!(
        "| path (one thread)                            | answers/s median (min-max) | ns/answer |"
    );
    println!("|---|---|---|");
    row("decode only (the floor)", &floor);
    row("decode + parse + insert (observe_packet)", &learn);
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ip(args: &[&str]) {
    let ok = std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {}", args.join(" "));
}

/// Sends every frame out of `IF_OUT` (paced); the sending thread's CPU ns per frame.
fn send(frames: &[Vec<u8>]) -> f64 {
    let ifname = std::ffi::CString::new(IF_OUT).unwrap();
    // Safety: plain socket calls on a socket we own and close; the address is zeroed and
    // filled for AF_PACKET.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
        sll.sll_halen = 6;
        let cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        for burst in frames.chunks(BURST) {
            for f in burst {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, f.len() as isize, "frame sent");
            }
            std::thread::sleep(PAUSE);
        }
        let spent = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu;
        libc::close(fd);
        spent as f64 / frames.len() as f64
    }
}

struct Live {
    sender_ns: f64,
    /// The watcher's CPU ns per answer it learned, and those answers.
    watcher: Option<(f64, u64)>,
}

/// One live run, with the watcher on `IF_OUT` or without.
fn live_run(frames: &[Vec<u8>], watcher: bool) -> Live {
    if !watcher {
        return Live {
            sender_ns: send(frames),
            watcher: None,
        };
    }
    let table = Arc::new(Mutex::new(NameTable::new(NameTableConfig::default())));
    let mut state =
        wardgate_policy::lower::lower("bench", 1, Vec::new(), Vec::new()).expect("empty state");
    state
        .groups
        .insert("dns".into(), vec!["198.51.100.53/32".parse().unwrap()]);
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(state)));
    let up = Arc::new(AtomicBool::new(false));
    let t = table.clone();
    let started = up.clone();
    let th = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        rt.block_on(async move {
            // No device in the state: no message goes to the detectors (their queue idle).
            let (queue, _detectors) = tokio::sync::mpsc::channel(wardgate_agent::flows::DNS_QUEUE);
            let to = wardgate_agent::dns::names::ToDetectors {
                queue,
                dropped: Default::default(),
            };
            let run = wardgate_agent::dns::names::run(vec![IF_OUT.to_string()], t, to, rx);
            tokio::pin!(run);
            // The socket is open once the task first waits.
            tokio::select! {
                biased;
                r = &mut run => return r,
                _ = tokio::task::yield_now() => {}
            }
            started.store(true, Ordering::Release);
            run.await
        })
        .expect("the watcher ran");
        cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !up.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "the watcher never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sender_ns = send(frames);
    // Until the watcher has read what its socket holds (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = table.lock().unwrap().stats().answers;
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    drop(tx); // the watcher returns
    let cpu = th.join().unwrap();
    let learned = table.lock().unwrap().stats().answers;
    Live {
        sender_ns,
        watcher: Some((cpu as f64 / learned.max(1) as f64, learned)),
    }
}

fn live(frames: &[Vec<u8>]) {
    // Safety: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "bench dns-names: the live table needs root (a network namespace)"
    );
    // Safety: unshare of this (the only) thread's network namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    ip(&["link", "add", IF_OUT, "type", "veth", "peer", "name", IF_IN]);
    ip(&["link", "set", IF_OUT, "up"]);
    ip(&["link", "set", IF_IN, "up"]);
    let (mut off, mut on, mut cpu, mut seen) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..LIVE_ROUNDS {
        for watcher in if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let l = live_run(frames, watcher);
            match l.watcher {
                None => off.push(l.sender_ns),
                Some((c, n)) => {
                    on.push(l.sender_ns);
                    cpu.push(c);
                    seen.push(n as f64 / frames.len() as f64 * 100.0);
                }
            }
        }
    }
    let m = |s: &[f64]| {
        let (m, lo, hi) = median_min_max(s);
        format!("{m:.0} ({lo:.0}-{hi:.0})")
    };
    println!(
        "\nlive: {ANSWERS} answers out of a veth, bursts of {BURST} every {} µs, {LIVE_ROUNDS} rounds interleaved\n",
        PAUSE.as_micros()
    );
    println!("| side | sender CPU ns/frame | watcher CPU ns/answer | answers learned % |");
    println!("|---|---|---|---|");
    println!("| watcher off | {} | - | - |", m(&off));
    println!("| watcher on | {} | {} | {} |", m(&on), m(&cpu), m(&seen));
}

fn main() {
    let frames: Vec<Vec<u8>> = (0..ANSWERS).map(answer).collect();
    pure(&frames);
    if std::env::var("WG_BENCH_ONLY").as_deref() != Ok("pure") {
        live(&frames);
    }
}
