//! Shared helpers for the privileged test tiers: privilege checks that fail loudly, a datapath
//! with its own pin root (removed on drop), crafted frames, and a small reference policy.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod lab;
pub mod sync_agent;

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};
use wardgate_agent::{config::MgmtRule, datapath::Datapath};
use wardgate_common::{GatewayConfig, program_names};
use wardgate_policy::{
    DesiredState, Direction, Mode, Proto,
    desired::{DeviceEntry, MacAddr, PolicyEntry, PortRange, Rule},
    lower::lower,
};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

pub const PUMP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// A PACS behind the same gateway in the device-to-device tests (198.51.100.10).
pub const PACS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// The MAC a frame to `addr` carries at the gateway's egress: the device's own MAC for the
/// devices of these tests (the gateway resolved it), the gateway's otherwise.
pub fn mac_of(addr: &str) -> [u8; 6] {
    match addr {
        "192.0.2.10" | "2001:db8:1::10" => PUMP_MAC,
        "192.0.2.11" => [2, 0, 0, 0, 0, 0x0b],
        "192.0.2.12" => [2, 0, 0, 0, 0, 0x0c],
        "192.0.2.13" => [2, 0, 0, 0, 0, 0x0d],
        "198.51.100.10" => PACS_MAC,
        _ => GW_MAC,
    }
}

/// Privileged tiers never skip: without root and bpffs they fail with this message.
pub fn require_privileges() {
    // Safety: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged test tier cannot run: needs root (CAP_BPF, CAP_NET_ADMIN); run `sudo cargo xtask test`"
    );
    assert!(
        std::path::Path::new("/sys/fs/bpf").exists(),
        "privileged test tier cannot run: /sys/fs/bpf missing (mount -t bpf bpf /sys/fs/bpf)"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique pin root under /sys/fs/bpf, removed (with every pin in it) on drop.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/wgtest-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        PinRoot(path)
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn gateway_config(unknown_drop: bool, non_ip_drop: bool) -> GatewayConfig {
    GatewayConfig {
        unknown_action: u32::from(unknown_drop),
        non_ip_action: u32::from(non_ip_drop),
        event_rate: 20,
        event_burst: 50,
        ..Default::default()
    }
}

pub fn mgmt() -> Vec<MgmtRule> {
    vec![MgmtRule {
        cidr: "203.0.113.1/32".parse().unwrap(),
        proto: Proto::Tcp,
        port: 22,
    }]
}

/// Loads a fresh datapath (own maps) with the reference policy at `generation`.
pub fn datapath(tag: &str) -> (PinRoot, Datapath) {
    require_privileges();
    let pin = PinRoot::new(tag);
    let mut dp = Datapath::load(&pin.0).expect("load datapath");
    dp.set_gateway_config(&gateway_config(false, false))
        .unwrap();
    dp.set_management(&mgmt()).unwrap();
    dp.apply(&reference_state(1)).unwrap();
    (pin, dp)
}

fn rule(
    rule_id: u32,
    direction: Direction,
    proto: Proto,
    peer: &str,
    ports: Option<(u16, u16)>,
) -> Rule {
    Rule {
        rule_id,
        name: format!("rule-{rule_id}"),
        direction,
        proto,
        peers: vec![peer.parse().unwrap()],
        ports: ports.map(|(lo, hi)| PortRange { lo, hi }),
        idle_timeout_s: 600,
        inspect: false,
        app: None,
    }
}

pub fn reference_rules() -> Vec<Rule> {
    use Direction::*;
    vec![
        rule(
            1001,
            FromDevice,
            Proto::Tcp,
            "198.51.100.10/32",
            Some((104, 104)),
        ),
        rule(
            1002,
            FromDevice,
            Proto::Udp,
            "198.51.100.0/24",
            Some((53, 53)),
        ),
        rule(
            1003,
            FromDevice,
            Proto::Tcp,
            "203.0.113.0/24",
            Some((11112, 11120)),
        ),
        rule(
            1004,
            ToDevice,
            Proto::Tcp,
            "198.51.100.20/32",
            Some((2575, 2575)),
        ),
        rule(1005, FromDevice, Proto::Icmp, "198.51.100.0/24", None),
        rule(
            1006,
            FromDevice,
            Proto::Tcp,
            "2001:db8:100::10/128",
            Some((104, 104)),
        ),
        rule(
            1007,
            FromDevice,
            Proto::Udp,
            "198.51.100.30/32",
            Some((5000, 5000)),
        ),
        // Wider than EXACT_PORTS_MAX: lowered to port prefixes, answered by the port LPM.
        rule(
            1008,
            FromDevice,
            Proto::Udp,
            "203.0.113.0/24",
            Some((40000, 49999)),
        ),
    ]
}

pub fn device(id: u32, name: &str, addrs: &[&str], mac: [u8; 6], mode: Mode) -> DeviceEntry {
    DeviceEntry {
        device_id: id,
        name: name.into(),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        mac: MacAddr(mac),
        policy_id: 1,
        mode,
        max_flows: 0,
        fail_open: false,
        grace_s: wardgate_common::DEFAULT_GRACE_S,
    }
}

pub fn reference_devices() -> Vec<DeviceEntry> {
    vec![
        device(
            1,
            "pump-1",
            &["192.0.2.10", "2001:db8:1::10"],
            PUMP_MAC,
            Mode::Enforce,
        ),
        device(
            2,
            "monitor-1",
            &["192.0.2.11"],
            [2, 0, 0, 0, 0, 0x0b],
            Mode::Monitor,
        ),
        device(
            3,
            "quarantined-1",
            &["192.0.2.12"],
            [2, 0, 0, 0, 0, 0x0c],
            Mode::Quarantine,
        ),
        device(
            4,
            "learner-1",
            &["192.0.2.13"],
            [2, 0, 0, 0, 0, 0x0d],
            Mode::Learn,
        ),
    ]
}

pub fn reference_state(generation: u32) -> DesiredState {
    state_with(generation, reference_devices(), reference_rules())
}

pub fn state_with(generation: u32, devices: Vec<DeviceEntry>, rules: Vec<Rule>) -> DesiredState {
    let policies = vec![PolicyEntry {
        policy_id: 1,
        profile: "infusion-pump".into(),
        profile_version: 0,
        rules,
        sensitivity: Default::default(),
        detection: Default::default(),
    }];
    lower("gw-test", generation, devices, policies).unwrap()
}

fn v4(a: &str) -> [u8; 4] {
    match a.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

fn v6(a: &str) -> [u8; 16] {
    match a.parse::<IpAddr>().unwrap() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{a} is not IPv6"),
    }
}

#[derive(Clone, Copy)]
pub enum L4 {
    Syn,
    Ack,
    Fin,
    Udp,
    Icmp,
}

/// An Ethernet frame from `src` to `dst` (`"addr:port"` with IPv4 or `[v6]:port`), to the
/// destination's MAC as the gateway would resolve it ([`mac_of`]).
pub fn frame(src_mac: [u8; 6], src: &str, dst: &str, l4: L4) -> Vec<u8> {
    let dst_mac = mac_of(&split(dst).0);
    frame_to(src_mac, dst_mac, src, dst, l4)
}

/// As [`frame`], with an explicit destination MAC.
pub fn frame_to(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, l4: L4) -> Vec<u8> {
    let (b, sp, dp) = ip_layer(src_mac, dst_mac, src, dst);
    let is_v6 = split(src).0.contains(':');
    let mut out = Vec::new();
    let payload = [0u8; 16];
    match l4 {
        // Initial sequence number 0: the first data byte is 1.
        L4::Syn => b.tcp(sp, dp, 0, 1000).syn().write(&mut out, &[]),
        L4::Ack => b.tcp(sp, dp, 1, 1000).ack(1).write(&mut out, &payload),
        L4::Fin => b.tcp(sp, dp, 1, 1000).fin().ack(1).write(&mut out, &[]),
        L4::Udp => b.udp(sp, dp).write(&mut out, &payload),
        L4::Icmp if is_v6 => b.icmpv6_echo_request(1, 1).write(&mut out, &payload),
        L4::Icmp => b.icmpv4_echo_request(1, 1).write(&mut out, &payload),
    }
    .unwrap();
    out
}

/// Ethernet and IP (v4 or v6, from the addresses) from `src` to `dst`, and the two ports.
fn ip_layer(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
) -> (PacketBuilderStep<IpHeaders>, u16, u16) {
    let (sa, sp) = split(src);
    let (da, dp) = split(dst);
    let b = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = if sa.contains(':') {
        b.ipv6(v6(&sa), v6(&da), 64)
    } else {
        b.ipv4(v4(&sa), v4(&da), 64)
    };
    (b, sp, dp)
}

/// The answer to a SYN: a SYN-ACK from `src` with initial sequence number `isn`.
pub fn syn_ack_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    isn: u32,
) -> Vec<u8> {
    let (b, sp, dp) = ip_layer(src_mac, dst_mac, src, dst);
    let mut out = Vec::new();
    b.tcp(sp, dp, isn, 1000)
        .syn()
        .ack(1)
        .write(&mut out, &[])
        .unwrap();
    out
}

/// A TCP segment (ACK, PSH when it carries data) with sequence number `seq` and `payload`.
pub fn data_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let (b, sp, dp) = ip_layer(src_mac, dst_mac, src, dst);
    let mut out = Vec::new();
    let t = b.tcp(sp, dp, seq, 1000).ack(1);
    let t = if payload.is_empty() { t } else { t.psh() };
    t.write(&mut out, payload).unwrap();
    out
}

fn split(s: &str) -> (String, u16) {
    let (a, p) = s.rsplit_once(':').unwrap();
    (a.trim_matches(['[', ']']).to_string(), p.parse().unwrap())
}

/// Runs `frame` once through the ingress (`from_device`) or egress program.
pub fn run(dp: &mut Datapath, from_device: bool, frame: &[u8]) -> u32 {
    let name = if from_device {
        program_names::INGRESS
    } else {
        program_names::EGRESS
    };
    run_prog(dp, name, frame, 1).0
}

/// Runs `frame` once; `None` when the kernel refuses the frame itself (BPF_PROG_TEST_RUN
/// checks some headers before the program runs).
pub fn try_run(dp: &mut Datapath, from_device: bool, frame: &[u8]) -> Option<u32> {
    let name = if from_device {
        program_names::INGRESS
    } else {
        program_names::EGRESS
    };
    let prog = dp.classifier(name).unwrap();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    })
    .ok()
    .map(|r| r.return_value)
}

/// Runs a program `repeat` times; returns the verdict and the kernel's average ns per run.
pub fn run_prog(dp: &mut Datapath, name: &'static str, frame: &[u8], repeat: u32) -> (u32, f64) {
    let prog = dp.classifier(name).unwrap();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    (res.return_value, res.duration.as_nanos() as f64)
}

/// Sends one raw Ethernet frame out of `ifname` in namespace `ns` (AF_PACKET).
pub fn send_frame(ns: &str, ifname: &str, frame: Vec<u8>) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    wardgate_testkit::ward::run_in(ns, move || {
        // Safety: plain socket calls on a socket we own and close; the address is zeroed and
        // filled for AF_PACKET.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(fd);
            assert_eq!(n, frame.len() as isize, "raw frame sent");
        }
    })
}
